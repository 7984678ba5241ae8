"""The peer a Python user would pick instead: quixstreams with exactly-once processing.

Run by ``bench.throughput`` in a virtual environment of its own (quixstreams pins other
versions of confluent-kafka and pydantic than the connector): consume ``--count``
records, turn each into one action (an id from a hash of the rule and the record, as
the connector does) and produce it to ``--output``, with ``processing_guarantee=
"exactly-once"`` (Kafka transactions). Prints one JSON line: records and seconds, timed
from the first record processed to the last transaction committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import uuid

from quixstreams import Application


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    first: list[float] = []

    def processed(topic: str, partition: int, offset: int) -> None:
        if not first:
            first.append(time.perf_counter())

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=f"quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        on_message_processed=processed,
        loglevel=logging.WARNING,
        auto_create_topics=True,
    )
    source = app.topic(args.input, key_deserializer="string", value_deserializer="bytes")
    sink = app.topic(args.output, value_serializer="bytes")
    sdf = app.dataframe(source)

    def action(value: bytes, key: str, timestamp: int, headers: object) -> bytes:
        event_id = f"{args.input}/{key}/{timestamp}"
        digest = hashlib.sha256(b"notify-all\x00" + event_id.encode()).hexdigest()[:32]
        return json.dumps(
            {"rule": "notify-all", "kind": "notify", "event_key": key,
             "payload": {"value": value.decode()}, "action_id": digest},
            separators=(",", ":"),
        ).encode()  # fmt: skip

    sdf = sdf.apply(action, metadata=True)
    sdf.to_topic(sink)
    app.run(count=args.count, collect=False)
    end = time.perf_counter()
    print(json.dumps({"records": args.count, "seconds": end - first[0]}), flush=True)


if __name__ == "__main__":
    main()
