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
* :mod:`connector.rules` — ``Rule`` and the other rule models; ``TriggerEngine`` (pure) in
  :mod:`connector.rules.trigger`;
* :mod:`connector.targets` — the ``log``, ``command``, ``webhook``, ``kafka``, ``python``
  targets, the workflow engines ``temporal``, ``airflow``, ``prefect``, and ``build_target``;
* :mod:`connector.gateway` — the HTTP events gateway.

One package per subsystem (docs/architecture.md, "Layout"): ``config``, ``common`` (leaves
several share), ``rules``, ``pipeline``, ``dispatch``, ``targets``, ``gateway``,
``notification``, ``metrics``, ``ops``, ``commands``; at the top only the shell (``cli``,
``assembly``, ``service``, ``lifecycle``), ``topics`` and the library modules above.

The vocabulary every package shares (``ConnectorError`` and its tree, ``Event``,
``Action``, the evaluator protocol, the Kafka client factory) is in :mod:`kec`; Ray's
listeners and ``wait_for_event`` are in :mod:`listeners`; the stores in :mod:`checkpoint`.
Development tooling (a local Kafka and PostgreSQL, the images, the demo) is in the
checkout's ``devkit`` package, which the product never imports.
"""

from kec.errors import ConnectorError

__all__ = ["ConnectorError"]
