"""Durable steps per second: ``wait_for_event`` steps that each need their event durable
before they go on (Ray's per-event protocol), many awaited at once in one process, against
the disk's fsync rate. Steps recorded while a transaction is being made durable share the
next one (``checkpoint.group_commit``), so with enough steps waiting the store writes
several per fsync.

``python -m bench.steps --help``; ``make bench`` runs it as row (d2).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from checkpoint import open_store
from checkpoint.base import CheckpointStore
from checkpoint.sql import SqlStore
from kec.event import Event
from listeners import EventListener, durable


class _Ready(EventListener):
    """A listener whose event is there at once: the step's cost is its checkpoint."""

    async def poll_for_event(self, *args: Any, **kwargs: Any) -> Event:
        return Event(key=f"k-{args[0]}", value=f'{{"n": {args[0]}}}')


async def _steps(store: CheckpointStore, count: int, concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def step(n: int) -> None:
        async with gate:
            await durable.wait_for_event(_Ready, n, step_id=f"wf-{n}/wait", store=store)

    started = time.perf_counter()
    await asyncio.gather(*(step(n) for n in range(count)))
    return time.perf_counter() - started


def run_steps(store_url: str, count: int, concurrency: int) -> tuple[float, int]:
    """Steps/s, and the transactions that recorded them."""
    with open_store(store_url) as store:
        seconds = asyncio.run(_steps(store, count, concurrency))
        assert isinstance(store, SqlStore)
        transactions = store.steps.transactions
    return count / seconds, transactions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64, help="steps awaited at once")
    args = parser.parse_args(argv)
    from bench.throughput import fsync_rate

    with tempfile.TemporaryDirectory(prefix="kec-steps-") as tmp:
        rate, transactions = run_steps(f"sqlite:///{tmp}/steps.db", args.steps, args.concurrency)
        fsyncs = fsync_rate(Path(tmp))
    print(
        f"{args.steps} steps, {args.concurrency} at once, SQLite: {rate:,.0f} steps/s in "
        f"{transactions} transactions; disk {fsyncs:,.0f} fsyncs/s: {rate / fsyncs:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
