"""A webhook receiver for the benchmark: answers every POST with 200 after ``--delay-ms``.

Runs in a process of its own (``python -m bench.receiver``), so its work does not share
the connector's interpreter lock; prints ``port N`` once it listens. The delay is an
asyncio sleep per request, so thousands can wait at once: a bare HTTP/1.1 keep-alive loop
on asyncio streams, lean enough that on two shared cores the receiver is not what limits
the measurement.
"""

from __future__ import annotations

import argparse
import asyncio

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            await asyncio.sleep(delay)  # the receiver's own work, simulated
            writer.write(_OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _main(port: int, delay: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, delay), "127.0.0.1", port, backlog=512
    )
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(_main(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
