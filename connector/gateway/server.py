"""Serving the gateway with uvicorn, in the foreground or in a thread, with clean shutdown.

Bound beyond loopback, the gateway requires a bearer token (it is refused without one:
anyone on the network could fire rules otherwise). TLS is served by uvicorn from a
certificate and key file (:class:`TlsFiles`); the limits are
:class:`~connector.gateway.limits.GatewayLimits`.

Shutdown, in this order: stop accepting connections; answer open long polls with 204
(:meth:`Gateway.drain`) so listeners re-poll elsewhere or later; let in-flight sends
finish (up to ``graceful`` seconds); then the app's lifespan flushes the producer.
SIGINT/SIGTERM trigger it in the foreground (:meth:`GatewayServer.run`);
:meth:`GatewayServer.stop` in a thread.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import uvicorn

from connector.config.models import is_loopback_host
from connector.gateway.app import build_app
from connector.gateway.ingest import Gateway
from connector.gateway.limits import GatewayLimits, header_timeout_protocol
from connector.metrics.core import Health
from kec.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from connector.config.models import HttpConfig

__all__ = ["AppServer", "GatewayServer", "TlsFiles", "parse_listen", "serving_options"]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for HTTPS: the certificate (chain) and its private key."""

    cert_file: Path
    key_file: Path
    key_password: str | None = None

    def __repr__(self) -> str:  # the password stays out of logs
        return f"TlsFiles(cert_file={self.cert_file!r}, key_file={self.key_file!r})"


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6) -> (host, port); raises ConfigError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host.strip("[]") or "127.0.0.1", int(port)


def serving_options(http: HttpConfig) -> dict[str, Any]:
    """``limits`` and ``tls`` of :class:`GatewayServer` from an ``http:`` config section."""
    tls = None
    if http.tls_cert_file is not None and http.tls_key_file is not None:
        password = http.tls_key_password
        tls = TlsFiles(
            http.tls_cert_file,
            http.tls_key_file,
            password.get_secret_value() if password is not None else None,
        )
    limits = GatewayLimits(
        max_body_bytes=http.max_body_bytes,
        max_json_depth=http.max_json_depth,
        max_connections=http.max_connections,
        header_timeout=http.header_timeout_seconds,
    )
    return {"limits": limits, "tls": tls}


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)


class AppServer:
    """One uvicorn server for one ASGI app, nothing served before run()/start(): refused
    beyond loopback without a token, TLS from :class:`TlsFiles`, the connection and
    header-time :class:`GatewayLimits`, clean shutdown in the foreground (:meth:`run`) or
    in a thread (:meth:`start`, :meth:`stop`). ``what`` names it in errors and the
    thread; ``on_shutdown`` runs once it stops accepting connections."""

    def __init__(
        self,
        app: Any,
        *,
        what: str,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
        token_hint: str = "",
        graceful: float = 5.0,
        log_level: str = "warning",
        limits: GatewayLimits | None = None,
        tls: TlsFiles | None = None,
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        if not token and not is_loopback_host(host):
            hint = f" ({token_hint})" if token_hint else ""
            raise ConfigError(
                f"the {what} listens on {host}, beyond loopback: it needs a token{hint}"
            )
        limits = limits or GatewayLimits()
        self._what = what
        self._host = host
        self._tls = tls
        ssl: dict[str, Any] = {}
        if tls is not None:
            ssl = {
                "ssl_certfile": str(tls.cert_file),
                "ssl_keyfile": str(tls.key_file),
                "ssl_keyfile_password": tls.key_password,
            }
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=int(graceful) or 1,
            http=header_timeout_protocol(limits.header_timeout),
            # uvicorn counts the connection being served: N would serve N - 1 at once.
            limit_concurrency=limits.max_connections + 1,
            **ssl,
        )
        self._server = _Server(config, on_shutdown)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0); known once started, kept after stop."""
        if self._port is None:
            for server in getattr(self._server, "servers", []):
                for sock in server.sockets:
                    self._port = int(sock.getsockname()[1])
                    return self._port
            raise ConnectorError(f"the {self._what} is not listening")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{'https' if self._tls is not None else 'http'}://{host}:{self.port}"

    def run(self) -> None:
        """Serve in the foreground (main thread) until SIGINT/SIGTERM; then return normally."""
        # uvicorn re-raises the signal it shut down for once it restores the previous
        # handlers; with the defaults that would kill the process (exit -15) after a
        # clean shutdown. These handlers absorb it (or stop a server still running).
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self._server.run()
        except SystemExit as exc:  # uvicorn exits when startup (bind, lifespan) fails
            raise ConnectorError(f"the {self._what} did not start (exit {exc.code})") from exc
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not self._server.started:
            raise ConnectorError(f"the {self._what} did not start (see the log above)")

    def _on_signal(self, _sig: int, _frame: FrameType | None) -> None:
        self._server.should_exit = True

    def start(self, timeout: float = 30.0) -> None:
        """Serve in a background thread; return once it accepts connections."""
        if self._thread is not None:
            return
        name = "kec-" + self._what.replace(" ", "-")
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread_alive() and time.monotonic() < deadline:
            time.sleep(0.02)  # uvicorn offers no "started" event to wait on
        if not self._server.started:
            self.stop()
            raise ConnectorError(f"the {self._what} did not start: {self._failure or 'timed out'}")
        _ = self.port  # remember the bound port for url after stop

    def stop(self, timeout: float = 30.0) -> None:
        """Shut down cleanly (see the module docstring) and wait for it; idempotent."""
        self._server.should_exit = True
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise ConnectorError(f"the {self._what} did not stop within {timeout:g}s")

    def _thread_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _serve(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # SystemExit from uvicorn included: report, not raise
            self._failure = exc

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class GatewayServer(AppServer):
    """One uvicorn server for one :class:`Gateway` (:class:`AppServer`); open long polls
    are answered 204 when it stops accepting connections."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: str | None = None,
        graceful: float = 5.0,
        log_level: str = "warning",
        limits: GatewayLimits | None = None,
        tls: TlsFiles | None = None,
        health: Callable[[], Health] | None = None,
    ) -> None:
        limits = limits or GatewayLimits()
        super().__init__(
            build_app(gateway, token=token, limits=limits, health=health),
            what="gateway",
            host=host,
            port=port,
            token=token,
            token_hint="http.token in the config, --token or KEC_GATEWAY_TOKEN",
            graceful=graceful,
            log_level=log_level,
            limits=limits,
            tls=tls,
            on_shutdown=gateway.drain,
        )
        self._gateway = gateway

    @classmethod
    def from_config(cls, gateway: Gateway, http: HttpConfig, **options: Any) -> GatewayServer:
        """The server an ``http:`` config section describes; ``options`` as for __init__."""
        settings: dict[str, Any] = {
            "host": http.host,
            "port": http.port,
            "token": http.token.get_secret_value() if http.token is not None else None,
            **serving_options(http),
        }
        return cls(gateway, **{**settings, **options})
