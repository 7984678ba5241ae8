"""Micro-benchmark of the checkpoint store's hot path: one batch of N events.

Each batch appends N small events (~150 B values) with explicit ids (claimed, as resends
are deduplicated by them) and one action per event to one partition's record, then
commits (with fsync). Prints events/s per backend::

    .venv/bin/python bench/store_micro.py sqlite --batch 1000 --batches 50
    PG_DSN=postgresql://... .venv/bin/python bench/store_micro.py postgres
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from checkpoint import open_store
from kec.action import Action, ActionKind
from kec.event import Event


def make_batch(n: int, start: int, topic: str) -> tuple[list[Event], list[Action]]:
    value = '{"order": 12345, "status": "paid", "amount": 99.5, "currency": "EUR", ' + (
        '"note": "' + "x" * 70 + '"}'
    )
    events = [
        Event(
            key=f"order-{i % 97}",
            value=value,
            namespace="shop",
            sender="bench",
            event_type="order",
            headers=(),
            topic=topic,
            partition=0,
            offset=start + i,
            event_id=uuid.uuid4().hex,
        )
        for i in range(n)
    ]
    actions = [
        Action(
            rule="on-order",
            kind=ActionKind.START_WORKFLOW,
            target="log",
            namespace="shop",
            event_ids=(e.event_id,),
            event_key=e.key,
            workflow="fulfil",
        )
        for e in events
    ]
    return events, actions


def run(url: str, batch: int, batches: int) -> float:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    tp = (topic, 0)
    data = [make_batch(batch, i * batch, topic) for i in range(batches + 2)]
    with open_store(url) as store:
        epoch = store.claim("bench", [tp])[tp].epoch

        def write(events: list[Event], actions: list[Action]) -> None:
            first = events[0].offset or 0
            with store.batch() as tx:
                assert len(tx.claim_event_ids(events)) == len(events)
                tx.append(tp, epoch, first, first + len(events), events, actions)

        for events, actions in data[:2]:  # warm-up: prepared statements, caches
            write(events, actions)
        started = time.perf_counter()
        for events, actions in data[2:]:
            write(events, actions)
        elapsed = time.perf_counter() - started
    return batch * batches / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=["sqlite", "postgres", "memory"])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: $PG_DSN or a dev cluster)")
    args = parser.parse_args()
    if args.backend == "memory":
        rate = run("memory://", args.batch, args.batches)
    elif args.backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            rate = run(f"sqlite://{Path(tmp) / 'bench.db'}", args.batch, args.batches)
    else:
        rate = _run_postgres(args)
    print(f"{args.backend}: {rate:,.0f} events/s (batch {args.batch}, {args.batches} batches)")


def _run_postgres(args: argparse.Namespace) -> float:
    from devkit.postgres import provide_postgres, scratch_database

    if args.dsn:
        with scratch_database(args.dsn) as url:
            return run(url, args.batch, args.batches)
    with provide_postgres() as server, scratch_database(server.dsn) as url:
        return run(url, args.batch, args.batches)


if __name__ == "__main__":
    main()
