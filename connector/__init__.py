"""kafka-event-connector: the service.

Public API, by module (imported from there; this package imports none of them, so the
CLI starts fast):

* :mod:`connector.config` — ``load_config(path)`` and the models of the YAML file (each
  target's settings in :mod:`connector.config.targets`), importing none of the parts
  they configure;
* :mod:`connector.assembly` — ``build_service(config)``: the application, assembled;
* :mod:`connector.service` — ``ConnectorService``, given its store, rules and targets;
* :mod:`connector.notification` — ``NotificationClient``, ``ListenerProcessor`` (AIFlow);
* :mod:`connector.workflow` — ``Workflow``, ``TaskAction`` (AIFlow's rules in Python);
* :mod:`connector.queue_listener` — Ray's ``QueueEventListener`` reading ``KEC_CONFIG``;
* :mod:`connector.rules`, :mod:`connector.rules.trigger` — ``Rule``, ``TriggerEngine`` (pure);
* :mod:`connector.targets` — the ``log``, ``command``, ``webhook``, ``kafka``, ``python``
  targets, the workflow engines ``temporal``, ``airflow``, ``prefect``, and ``build_target``;
* :mod:`connector.gateway` — the HTTP events gateway.

The vocabulary every package shares (``ConnectorError`` and its tree, ``Event``,
``Action``, the evaluator protocol, the Kafka client factory) is in :mod:`kec`; Ray's
listeners and ``wait_for_event`` are in :mod:`listeners`; the stores in :mod:`checkpoint`.
Development tooling (a local Kafka and PostgreSQL, the images, the demo) is in the
checkout's ``devkit`` package, which the product never imports.
"""

from kec.errors import ConnectorError

__all__ = ["ConnectorError"]
