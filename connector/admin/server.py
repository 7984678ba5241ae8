"""Serving the admin API and console beside ``run`` (a companion of the service, or of the
supervisor with ``pipeline.processes`` above 1).

:class:`AdminServer` is an :class:`~connector.gateway.server.AppServer` (the gateway's
serving: a token required beyond loopback, connection and header-time limits, clean
shutdown) around :func:`~connector.admin.app.build_admin_app`; while it runs it samples
the connector's numbers for the console's charts (:class:`~connector.admin.history.History`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connector.admin.app import build_admin_app
from connector.admin.source import AdminSource
from connector.gateway.limits import GatewayLimits
from connector.gateway.server import AppServer

if TYPE_CHECKING:
    from connector.config.models import AdminConfig

__all__ = ["AdminServer"]

# Operators and their browsers: a few connections are plenty.
ADMIN_LIMITS = GatewayLimits(max_body_bytes=16_384, max_connections=64, header_timeout=20.0)


class AdminServer(AppServer):
    """The admin API and console on ``source``; nothing listens before :meth:`start`."""

    def __init__(
        self,
        source: AdminSource,
        *,
        host: str = "127.0.0.1",
        port: int = 8081,
        token: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            build_admin_app(source, token=token),
            what="admin server",
            host=host,
            port=port,
            token=token,
            token_hint="admin.token in the config",
            limits=ADMIN_LIMITS,
            **options,
        )
        self.source = source

    @classmethod
    def from_config(cls, source: AdminSource, admin: AdminConfig, **options: Any) -> AdminServer:
        """The server an ``admin:`` config section describes."""
        token = admin.token.get_secret_value() if admin.token is not None else None
        return cls(source, host=admin.host, port=admin.port, token=token, **options)

    def start(self, timeout: float = 30.0) -> None:
        self.source.history.start()
        try:
            super().start(timeout)
        except BaseException:
            self.source.history.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self.source.history.stop()
