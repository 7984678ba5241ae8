"""The connector's exception tree.

Every error the project raises on purpose derives from :class:`ConnectorError`;
foreign errors (librdkafka, sqlite3, psycopg, OS) are wrapped with ``raise ... from exc``
so callers catch one family. ``retriable`` says whether trying the same call again
later can succeed without a change by a person::

    ConnectorError
    ├── ConfigError                 bad configuration (file, line, field path)
    │   └── ConfigFileError         a config file's errors, one FILE:LINE PATH each
    ├── KafkaClientError            a Kafka client call failed            (retriable)
    │   ├── BrokerUnavailable       no broker answered in time            (retriable)
    │   └── KafkaFatal              librdkafka's fatal error: the client is unusable
    ├── CheckpointError             the checkpoint store failed           (retriable)
    │   ├── StoreCorrupt            the store file/database is not ours or is damaged
    │   ├── SchemaTooNew            written by a newer version of this project
    │   ├── StoreLocked             another process has the SQLite store open
    │   ├── StoreMissing            no store there, and the caller may not create one
    │   ├── StoreRefused            its server refused us: password, certificate, TLS
    │   ├── Fenced                  another instance owns the partition now
    │   ├── OffsetConflict          a batch does not start where the store's partition is
    │   ├── StoreInUse              an older version still uses the store: no migration
    │   └── ClaimTimeout            assigned partitions could not be claimed in time
    ├── DecodeError                 a record cannot become an Event (goes to the DLQ)
    ├── GatewayError                the HTTP events gateway failed or refused (retriable)
    └── TargetError                 delivering an action failed           (retriable)
        └── TargetRejected          the target refused the action for good

The development tooling (the checkout's ``devkit`` package) hangs its own branch,
``DevkitError``, under :class:`ConnectorError` in ``devkit/errors.py``.
"""

from __future__ import annotations

from typing import ClassVar


class ConnectorError(Exception):
    """Root of every error raised by kafka-event-connector."""

    retriable: ClassVar[bool] = False


class ConfigError(ConnectorError):
    """A configuration that cannot be used; the message names file, line and field."""


class ConfigFileError(ConfigError):
    """A config file with errors; ``errors`` lists each as ``FILE:LINE PATH: message``."""

    def __init__(self, file: str, errors: list[str]) -> None:
        self.file = file
        self.errors = errors
        count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
        super().__init__(f"{file}: {count}\n" + "\n".join(f"  {e}" for e in errors))


class KafkaClientError(ConnectorError):
    """A Kafka client operation failed."""

    retriable = True


class BrokerUnavailable(KafkaClientError):
    """No Kafka broker answered within the allowed time."""


class KafkaNotAuthorized(KafkaClientError):
    """The cluster refused an operation for want of an ACL (topic, group or cluster
    authorization failed): no retry helps until someone grants it, so the process stops."""

    retriable = False


class KafkaSettingRefused(KafkaClientError):
    """The cluster refuses a client setting (a session timeout outside the broker's
    range, say): no retry helps until the setting changes, so the process stops."""

    retriable = False


class KafkaFatal(KafkaClientError):
    """A fatal librdkafka error (e.g. a fenced idempotent producer): the client is unusable."""

    retriable = False


class CheckpointError(ConnectorError):
    """The checkpoint store could not complete an operation."""

    retriable = True


class StoreCorrupt(CheckpointError):
    """The store exists but is not a readable checkpoint store of ours."""

    retriable = False


class SchemaTooNew(CheckpointError):
    """The store was written by a newer schema version than this code knows."""

    retriable = False


class StoreLocked(CheckpointError):
    """Another process has this SQLite store open (one process per SQLite file)."""

    retriable = False


class StoreRefused(CheckpointError):
    """The store's server refused this connector: a wrong password, a certificate it
    cannot trust, TLS it requires. Trying again cannot help until the settings change."""

    retriable = False


class StoreMissing(CheckpointError):
    """No checkpoint store where one was looked for (a missing or empty SQLite file, a
    database without the connector's tables), opened by a tool that must not create one."""

    retriable = False


class Fenced(CheckpointError):
    """This instance's ownership epoch of a partition is no longer current.

    ``partitions`` names the ``(topic, partition)`` pairs concerned, when known.
    """

    retriable = False

    def __init__(self, message: str, partitions: tuple[tuple[str, int], ...] = ()) -> None:
        super().__init__(message)
        self.partitions = partitions


class OffsetConflict(CheckpointError):
    """A batch does not start at its partition's stored next offset, so the store refused it.

    The usual cause: an earlier attempt of the same batch committed, but its acknowledgement
    was lost (a reset during COMMIT, a failover), so the caller believes the store is behind.
    ``stored`` is the partition's next offset in the store (None: never checkpointed),
    ``first`` the offset the refused batch started at.
    """

    retriable = True

    def __init__(self, tp: tuple[str, int], stored: int | None, first: int) -> None:
        super().__init__(
            f"{tp[0]}[{tp[1]}]: the batch starts at offset {first} but the store's next offset "
            f"is {stored}"
        )
        self.partition = tp
        self.stored = stored
        self.first = first


class StoreInUse(CheckpointError):
    """The store's schema must be migrated, but a process of an older version still uses it."""

    retriable = False


class ClaimTimeout(CheckpointError):
    """Kafka assigned partitions that the store could not claim for too long: the process
    stops, so that Kafka gives them to an instance that can."""

    retriable = False


class DecodeError(ConnectorError):
    """A Kafka record could not be turned into an Event."""


class GatewayError(ConnectorError):
    """The HTTP events gateway could not be reached or answered with an error."""

    retriable = True


class TargetError(ConnectorError):
    """Delivering an action to its target failed; a later attempt may succeed."""

    retriable = True


class TargetRejected(TargetError):
    """The target refused the action; retrying the same action cannot succeed."""

    retriable = False
