"""A load generator for the latency run: plain records at a fixed rate, in its own process
(``python -m bench.load``), so that pacing it does not take the connector's interpreter
lock. Prints ``done N`` when every record is acknowledged."""

from __future__ import annotations

import argparse
import json
import time

from confluent_kafka import Producer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args()
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True,
                         "linger.ms": 1})  # fmt: skip
    headers = [("content-type", b"application/json")]
    started = time.perf_counter()
    for i in range(args.count):
        due = started + i / args.rate
        ahead = due - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)  # pacing the offered load
        value = json.dumps({"seq": i, "status": "created", "amount": i % 1000, "pad": "x" * 88})
        producer.produce(
            args.topic, key=f"customer-{i % args.keys:05d}", value=value, headers=headers
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    print(f"done {args.count}", flush=True)


if __name__ == "__main__":
    main()
