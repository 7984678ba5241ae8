"""``python -m tests.nemesis``: one proxy as a process of its own, controlled over TCP.

Prints one JSON line, ``{"port": <proxy port>, "control": <control port>}``, once both
listen. Each control connection sends one JSON line ``{"op": ..., "args": {...}}`` (an op
is a method of the proxy: delay, blackhole, refuse, reset_all, heal, stats, and with
``--pg`` swallow_commit_acks and statements; or stop) and gets one line back,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ...}``.
:class:`tests.nemesis.proxy.RemoteProxy` is the client.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import socketserver
import sys
import threading
from typing import Any

from tests.nemesis.pg import PgProxy
from tests.nemesis.proxy import Address, Proxy

OPS = {"delay", "blackhole", "refuse", "reset_all", "heal", "stats"}
PG_OPS = {"swallow_commit_acks", "statements"}


def _address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, not {text!r}")
    return host, int(port)


def _run(proxy: Proxy, ops: set[str], request: dict[str, Any]) -> Any:
    op, args = request.get("op"), request.get("args") or {}
    if op not in ops or not isinstance(args, dict):
        raise ValueError(f"unknown op {op!r} (known: {', '.join(sorted(ops))})")
    return getattr(proxy, op)(**args)


def _closed(fd: int) -> bool:
    """Whether the pipe ``fd`` reached its end (its writer, the owner, closed it or died)."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable) and os.read(fd, 4096) == b""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.nemesis", description=__doc__)
    parser.add_argument("--upstream", type=_address, required=True, help="host:port")
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 0))
    parser.add_argument("--control", type=_address, default=("127.0.0.1", 0))
    parser.add_argument("--pg", action="store_true", help="PostgreSQL-aware (PgProxy)")
    parser.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="stop when stdin closes (owner died)"
    )
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="nemesis: %(message)s")
    proxy: Proxy = (PgProxy if opts.pg else Proxy)(opts.upstream, listen=opts.listen)
    ops = OPS | PG_OPS if opts.pg else OPS
    stop = threading.Event()

    class Control(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                request = json.loads(self.rfile.readline())
                if request.get("op") == "stop":
                    stop.set()
                    answer: dict[str, Any] = {"ok": True, "result": None}
                else:
                    answer = {"ok": True, "result": _run(proxy, ops, request)}
            except Exception as exc:  # every failure goes back to the caller
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    with proxy, socketserver.TCPServer(opts.control, Control) as control:
        control.timeout = 0.2
        port = control.server_address[1]
        print(json.dumps({"port": proxy.port, "control": port}), flush=True)
        while not stop.is_set():
            control.handle_request()
            if opts.exit_on_stdin_eof and _closed(sys.stdin.fileno()):
                stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
