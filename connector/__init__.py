"""kafka-event-connector: the service.

Public API, by module (imported from there; this package imports none of them, so the
CLI starts fast):

* :mod:`connector.config` — ``load_config(path)`` and the models of the YAML file;
* :mod:`connector.service` — ``build_service(config)``, ``ConnectorService``;
* :mod:`connector.notification` — ``NotificationClient``, ``ListenerProcessor`` (AIFlow);
* :mod:`connector.durable` — ``wait_for_event`` (Ray; also ``listeners.wait_for_event``);
* :mod:`connector.workflow` — ``Workflow``, ``TaskAction`` (AIFlow's rules in Python);
* :mod:`connector.rules`, :mod:`connector.trigger` — ``Rule``, ``TriggerEngine`` (pure);
* :mod:`connector.targets` — the ``log``, ``command``, ``webhook``, ``kafka``, ``python``
  targets and ``build_target``;
* :mod:`connector.gateway` — the HTTP events gateway;
* :mod:`connector.errors` — the exception tree, rooted at ``ConnectorError``;
* :mod:`connector.devbroker`, :mod:`connector.devpostgres` — a local Kafka and
  PostgreSQL for development and tests.
"""

from connector.errors import ConnectorError

__all__ = ["ConnectorError"]
