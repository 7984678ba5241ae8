"""Can a server listen on HOST:PORT? Asked before starting one, for a message that helps.

uvicorn reports a taken port as a bare exit code after its own log line; checking first
lets ``run`` and ``gateway`` say which address, why, and which setting moves it. The
check binds the way uvicorn does (``SO_REUSEADDR``, IPv6 when the host has a colon) and
releases at once; a port taken in between still fails in the server itself.
"""

from __future__ import annotations

import errno
import socket

from kec.errors import ConfigError, ConnectorError

__all__ = ["check_listen", "url_of"]


def url_of(host: str, port: int, *, tls: bool = False) -> str:
    """``http://HOST:PORT`` (``https`` with ``tls``; IPv6 hosts in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}"


def check_listen(host: str, port: int, *, what: str, setting: str) -> None:
    """Raise when ``host:port`` cannot be listened on now; port 0 always can.

    ``what`` names the server (``the HTTP gateway``), ``setting`` where its address is
    configured (``http.port in connector.yaml``). A taken port or a port needing
    privileges is a :class:`~kec.errors.ConnectorError`; a host that is not an address
    of this machine is a :class:`~kec.errors.ConfigError`.
    """
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"{host}:{port}" if family == socket.AF_INET else f"[{host}]:{port}"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except socket.gaierror as exc:
        raise ConfigError(f"{what} cannot listen on {where}: unknown host ({exc})") from exc
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"{what} cannot listen on {where}: {host} is not an address of this machine; "
                f"change {setting}"
            ) from exc
        if exc.errno == errno.EADDRINUSE:
            reason = (
                f"port {port} is already in use by another process (another gateway or "
                "connector on the same port?): stop it, or choose another port"
            )
        elif exc.errno == errno.EACCES:
            reason = f"port {port} needs privileges this process lacks: choose a port above 1023"
        else:
            reason = f"{exc.strerror or exc}: choose another address"
        raise ConnectorError(f"{what} cannot listen on {where}: {reason} ({setting})") from exc
