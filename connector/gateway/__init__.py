"""The HTTP events gateway: ``POST /event/send_event/{workflow_id}`` to Kafka, answered once
the event is durably checkpointed; long polls for ``HTTPListener`` (docs/architecture.md,
"The HTTP gateway").

* :mod:`connector.gateway.ingest` — :class:`Gateway`: producer, confirmation from the
  store, waiters (the protocol's steps are in its docstring); it joins no consumer
  group: ``run`` with the same ``http:`` section checkpoints the gateway's topic;
* :mod:`connector.gateway.app` — the Starlette routes and their status codes;
* :mod:`connector.gateway.server` — uvicorn serving with clean shutdown, TLS;
* :mod:`connector.gateway.limits` — body size, JSON depth, connections, header timeout;
* :mod:`connector.gateway.waiters` — pure bookkeeping: the queue rows the connector's
  pipeline writes (:class:`~connector.gateway.waiters.HttpIndex`), waiters, leases.
"""

from connector.gateway.app import build_app
from connector.gateway.ingest import EventRefused, Gateway, GatewaySettings, SendResult
from connector.gateway.limits import GatewayLimits
from connector.gateway.server import GatewayServer, TlsFiles, parse_listen

__all__ = [
    "EventRefused",
    "Gateway",
    "GatewayLimits",
    "GatewayServer",
    "GatewaySettings",
    "SendResult",
    "TlsFiles",
    "build_app",
    "parse_listen",
]
