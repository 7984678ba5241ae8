"""The development tooling's errors: a branch of the project's one exception tree.

Rooted at :class:`kec.errors.ConnectorError`, so the CLI prints each as one line and
callers that catch the project's errors catch these too; the product itself never raises
them (it does not import devkit)::

    ConnectorError
    └── DevkitError                 a development tool could not do its job
        ├── DevBrokerError          the local development broker could not start
        ├── DevPostgresError        the local development PostgreSQL could not start
        ├── DevRegistryError        the local development schema registry could not start
        ├── DockerUnavailable       no usable Docker engine or image
        ├── ImageBuildError         an image of the project could not be built
        └── ManifestError           the Kubernetes manifests could not be rendered or validated
"""

from __future__ import annotations

from kec.errors import ConnectorError


class DevkitError(ConnectorError):
    """A development tool could not do its job; the message says which step and why."""


class DevBrokerError(DevkitError):
    """The local Apache Kafka broker for development and tests did not come up."""


class DevPostgresError(DevkitError):
    """The PostgreSQL server for development and tests did not come up."""


class DevRegistryError(DevkitError):
    """The local schema registry (Apicurio) for development and tests did not come up."""


class DockerUnavailable(DevkitError):
    """No usable Docker engine or image; the message says which, in one line."""


class ImageBuildError(DevkitError):
    """An image of the project could not be built; the message says which step failed."""


class ManifestError(DevkitError):
    """The Kubernetes manifests could not be read, rendered or validated; the message says
    which file or document and why."""
