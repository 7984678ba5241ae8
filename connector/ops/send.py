"""``send``: produce events the way the connector's own clients do.

Events are encoded with :mod:`kec.codec` (record key = event key, metadata and the
event id in headers) by an idempotent producer with ``acks=all``. With a count above one,
each value gets a ``-i`` suffix (``v-0``, ``v-1``...) so the events can be told apart in
``tail`` and in target output; ``same_value`` keeps the value as given. Every event gets
its own id, so the connector treats them as distinct either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from kec import kafka
from kec.codec import check_outgoing
from kec.errors import ConfigError, DecodeError, KafkaClientError
from kec.event import DEFAULT_NAMESPACE, Event
from kec.kafka import KafkaError, Message

FLUSH_TIMEOUT = 30.0


@dataclass(frozen=True)
class SendReport:
    topic: str
    count: int  # events acknowledged by the broker
    seconds: float
    positions: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    interrupted: bool = False  # ``stop`` was set before every event was produced


def topic_for(
    topics: Mapping[str, str], namespace: str | None, topic: str | None
) -> tuple[str, str]:
    """``(topic, namespace)`` to send to: an explicit topic wins, else the namespace's topic.

    Without a namespace, the only namespace of ``topics``; several are refused rather
    than guessed. A namespace with several topics sends to the first one configured.
    """
    if topic is not None:
        return topic, namespace or topics.get(topic, DEFAULT_NAMESPACE)
    declared = list(dict.fromkeys(topics.values()))
    if not declared:
        raise ConfigError(
            "no topic to send to: give -c FILE (the connector's config: its namespace's "
            "topic) or --topic TOPIC"
        )
    if namespace is None:
        if len(declared) > 1:
            raise ConfigError(
                f"several namespaces ({', '.join(sorted(declared))}): give --namespace NAME "
                "or --topic TOPIC"
            )
        namespace = declared[0]
    for name, ns in topics.items():
        if ns == namespace:
            return name, namespace
    known = ", ".join(sorted(declared))
    raise ConfigError(
        f"no topic for namespace {namespace!r} (configured namespaces: {known}): give one of "
        "those with --namespace, or --topic TOPIC"
    )


def make_events(
    key: str,
    value: str,
    *,
    namespace: str,
    sender: str | None = None,
    context: str | None = None,
    count: int = 1,
    same_value: bool = False,
) -> Iterator[Event]:
    for i in range(count):
        text = value if count == 1 or same_value else f"{value}-{i}"
        yield Event(key=key, value=text, namespace=namespace, sender=sender, context=context)


class _Pacer:
    """Spaces sends ``1/rate`` seconds apart on the monotonic clock (no drift over a run)."""

    def __init__(self, rate: float | None, sleep: Callable[[float], object]) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._sleep = sleep
        self._start = time.monotonic()

    def wait(self, index: int) -> None:
        if not self._interval:
            return
        delay = self._start + index * self._interval - time.monotonic()
        if delay > 0:
            self._sleep(delay)


def send_events(
    connection: kafka.Connection,
    topic: str,
    events: Iterator[Event],
    *,
    rate: float | None = None,
    on_sent: Callable[[int], None] | None = None,
    sleep: Callable[[float], object] = time.sleep,
    stop: threading.Event | None = None,
) -> SendReport:
    """Produce ``events`` to ``topic``; return once every one is acknowledged.

    ``on_sent(n)`` is called as acknowledgements arrive (for a progress bar). When
    ``stop`` is set (Ctrl-C), no further event is produced; the ones already produced
    are still waited for, and the report says ``interrupted``.
    Raises :class:`KafkaClientError` when any event is not acknowledged, and
    :class:`~kec.errors.DecodeError` for an event the pipeline would send to the dead
    letters (a key over 1,024 bytes, say), producing none after it.
    """
    producer = kafka.producer(connection)
    acked: list[tuple[int, int]] = []
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
            return
        acked.append((msg.partition() or 0, msg.offset() or 0))
        if on_sent is not None:
            on_sent(1)

    started = time.monotonic()
    pacer = _Pacer(rate, sleep)
    sent = 0
    interrupted = False
    for index, event in enumerate(events):
        pacer.wait(index)
        if stop is not None and stop.is_set():
            interrupted = True
            break
        try:  # an event the pipeline would only dead-letter is refused, before Kafka
            key, value, headers = check_outgoing(event)
        except DecodeError as exc:
            producer.flush(30)  # the events before it are sent as they would have been
            raise DecodeError(f"event {index} (key {event.key[:40]!r}): {exc}") from exc
        while True:
            try:
                producer.produce(
                    topic,
                    key=key,
                    value=value,
                    headers=list[tuple[str, str | bytes | None]](headers),
                    timestamp=event.create_time,  # the codec reads create_time back from it
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain it
        sent += 1
        producer.poll(0)
    remaining = producer.flush(FLUSH_TIMEOUT)
    if errors or remaining:
        detail = errors[0] if errors else f"{remaining} not acknowledged in {FLUSH_TIMEOUT:.0f}s"
        raise KafkaClientError(
            f"sent {len(acked)} of {sent} events to {topic}; {len(errors)} failed: {detail}"
        )
    return SendReport(topic, len(acked), time.monotonic() - started, sorted(acked), interrupted)
