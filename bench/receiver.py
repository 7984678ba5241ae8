"""A webhook receiver for the benchmark: answers every POST with 200 after ``--delay-ms``.

Runs in a process of its own (``python -m bench.receiver``), so its work does not share
the connector's interpreter lock; prints ``port N`` once it listens. On two shared cores
the receiver's CPU is taken from the connector, where a real receiver would run on
machines of its own: so it is as lean as an HTTP/1.1 keep-alive server gets in Python,
a protocol on uvloop's loop that parses requests as bytes arrive and answers each with a
timer (``call_later``), no task, stream or sleep per request. On asyncio streams it spent
~56 us of CPU a request (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class _Receiver(asyncio.Protocol):
    """One connection: each complete request (head, ``Content-Length`` body) is answered
    ``delay`` seconds after it arrived, in order."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is only alike

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            start = buffer.find(b"\r\nContent-Length:", 0, end)
            if start < 0:  # another spelling: the (rarer) slow way
                start = bytes(buffer[:end]).lower().find(b"\r\ncontent-length:")
            if start >= 0:
                stop = buffer.find(b"\r\n", start + 2)
                length = int(buffer[start + 17 : stop])
            if len(buffer) < end + 4 + length:
                return
            del buffer[: end + 4 + length]
            asyncio.get_running_loop().call_later(self.delay, self._answer)

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_OK)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _main(port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Receiver(delay), "127.0.0.1", port, backlog=512)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(_main(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
