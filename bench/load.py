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
    # linger.ms 5 is librdkafka's default: a producer as users run it. (At 1 ms the broker
    # took more than a core of the two for its produce requests alone.)
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})  # fmt: skip
    headers = [("content-type", b"application/json")]
    # One record before the clock starts: the producer has its connection and its
    # idempotent producer id, which would otherwise delay the first paced records by
    # hundreds of ms and show as the connector's p99.
    producer.produce(args.topic, key="warmup", value="{}")
    assert producer.flush(60) == 0
    started = time.perf_counter()
    sent = 0
    while sent < args.count:
        # Every millisecond, the records due by now: one sleep per tick rather than per
        # record keeps this process from taking a core of its own.
        due = min(args.count, int((time.perf_counter() - started) * args.rate) + 1)
        for i in range(sent, due):
            value = json.dumps({"seq": i, "status": "created", "amount": i % 1000, "pad": "x" * 88})
            producer.produce(
                args.topic, key=f"customer-{i % args.keys:05d}", value=value, headers=headers
            )
        sent = due
        producer.poll(0)
        time.sleep(0.001)
    assert producer.flush(60) == 0
    print(f"done {args.count}", flush=True)


if __name__ == "__main__":
    main()
