"""Targets: where actions are delivered (docs/architecture.md, "Targets").

* :mod:`connector.targets.base` — the contract every target keeps (:class:`Target`);
* one module per type: :mod:`~connector.targets.log`, :mod:`~connector.targets.command`,
  :mod:`~connector.targets.webhook`, :mod:`~connector.targets.kafka`,
  :mod:`~connector.targets.python`, and the workflow engines
  :mod:`~connector.targets.temporal`, :mod:`~connector.targets.airflow`,
  :mod:`~connector.targets.prefect` (their shared parts in
  :mod:`~connector.targets.engine` and :mod:`~connector.targets.engine_http`);
* :mod:`connector.targets.registry` — :func:`build_target`, a target from its settings.

Each type's settings (the config file's ``targets:``) are models in
:mod:`connector.config.targets`, which imports none of this package, so loading a
config loads no target.
"""

from connector.targets.base import Target
from connector.targets.command import CommandTarget
from connector.targets.kafka import KafkaTarget
from connector.targets.log import LogTarget
from connector.targets.python import PythonTarget
from connector.targets.registry import build_target
from connector.targets.webhook import WebhookTarget

__all__ = [
    "CommandTarget",
    "KafkaTarget",
    "LogTarget",
    "PythonTarget",
    "Target",
    "WebhookTarget",
    "build_target",
]
