"""``tail``: follow the events of the configured topics without joining the group.

The reader assigns every partition itself (no group membership, nothing committed), at
the beginning or at the end it finds *when it starts*: the end is resolved to concrete
offsets before the first poll, so an event produced after :func:`tail_events` has begun
reading is always shown. Records that are not events are reported, not fatal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from connector.ops.kafka_io import partitions_of, watermarks
from kec import kafka
from kec.codec import event_from_message
from kec.errors import DecodeError, KafkaClientError
from kec.event import Event
from kec.kafka import fetch_batch, is_eof, is_fatal, kafka_tp
from kec.kafka.registry import RecordFormats

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class TailOptions:
    key_glob: str | None = None
    from_beginning: bool = False
    max_events: int | None = None


def format_line(event: Event) -> str:
    """One human line: time, namespace, key, value, context."""
    when = datetime.fromtimestamp(event.create_time / 1000, UTC).isoformat(timespec="milliseconds")
    line = f"{when} {event.namespace} {event.key} {event.text}"
    return f"{line} context={event.context}" if event.context else line


def format_json(event: Event) -> str:
    return json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)


def tail_events(
    connection: kafka.Connection,
    topics: Mapping[str, str],
    options: TailOptions,
    emit: Callable[[Event], None],
    stop: threading.Event,
    *,
    on_undecodable: Callable[[str], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    formats: RecordFormats | None = None,
) -> int:
    """Emit matching events until ``stop`` is set or ``max_events`` were emitted.

    ``on_ready`` is called once every partition has its start offset; ``formats``: the
    topics written with a registered schema, decoded as the pipeline decodes them.
    Returns the count.
    """
    if options.max_events is not None and options.max_events <= 0:
        return 0
    consumer = kafka.reader(connection, "tail")
    try:
        tps = partitions_of(consumer, topics)
        starts = [
            kafka_tp(tp, watermarks(consumer, tp)[0 if options.from_beginning else 1]) for tp in tps
        ]
        consumer.assign(starts)
        if on_ready is not None:
            on_ready()
        emitted = 0
        while not stop.is_set():
            for msg in fetch_batch(consumer, 100, POLL_SECONDS * 1000):
                err = msg.error()
                if err is not None:
                    if is_fatal(err):
                        raise KafkaClientError(f"fatal consumer error: {err}")
                    if not is_eof(err) and on_undecodable is not None:
                        on_undecodable(f"consumer error: {err}")
                    continue
                topic = msg.topic() or ""
                try:
                    event = event_from_message(
                        msg,
                        topics.get(topic, "default"),
                        key_decoder=formats.key_decoder(topic) if formats else None,
                        value_decoder=formats.value_decoder(topic) if formats else None,
                    )
                except DecodeError as exc:
                    if on_undecodable is not None:
                        on_undecodable(
                            f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: not an event: {exc}"
                        )
                    continue
                if options.key_glob and not fnmatchcase(event.key, options.key_glob):
                    continue
                emit(event)
                emitted += 1
                if options.max_events is not None and emitted >= options.max_events:
                    return emitted
        return emitted
    finally:
        consumer.close()
