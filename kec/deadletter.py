"""Records that cannot become events or actions: their dead-letter copies.

A record is *poison* when anything about it alone fails: it cannot be decoded into an
event (no key, not UTF-8, declared JSON that is not, too large, a namespace header that
disagrees with its topic, ...) or the rules raise on it. It is never its batch's failure:
the pipeline (and the Kafka listener, when it is given a dead-letter topic) sends it
here and moves on. Each poison record goes to the dead-letter topic as it came (key,
value, its own headers first, so it can be sent back to its source as it was) plus the
reason headers ``error``, ``error-class``, ``source-topic``, ``source-partition``,
``source-offset``. The pipeline also records it in the store's dead-records table with
the same reason (:meth:`checkpoint.base.DeadRecord.of`).

A record too large for the dead-letter topic goes there as metadata plus a truncated
value (and key), with a ``dlq-truncated`` header giving the original sizes; headers that
alone would not fit are dropped (``dlq-headers-dropped``).

:meth:`DeadLetters.send` waits for the broker to acknowledge every copy; it raises
:class:`~kec.errors.KafkaClientError` (retriable) otherwise, and the pipeline then rewinds
and retries the whole batch (the listener raises it to its caller), so a poison record
is never skipped unrecorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kec.codec import record_headers, record_value
from kec.errors import DecodeError, KafkaClientError
from kec.event import Event

log = logging.getLogger(__name__)

DLQ_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes: the copy stays below
_OVERHEAD = 4096  # record framing and the reason headers' own bytes, with room to spare

RawHeaders = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Poison:
    """A poison record: where it came from, why it is poison, and what it held."""

    topic: str
    partition: int
    offset: int
    error: str
    error_class: str
    key: bytes | None
    value: bytes | None
    headers: RawHeaders

    @classmethod
    def of(cls, msg: Any, exc: BaseException) -> Poison:
        """The poison record for a confluent-kafka ``Message`` and what it raised."""
        if isinstance(exc, DecodeError):
            error = str(exc)
        else:  # not expected of one record: say what it was, briefly
            error = f"{type(exc).__name__}: {str(exc)[:500]}"
        return cls(
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            error=error,
            error_class=type(exc).__name__,
            key=_as_bytes(msg.key()),
            value=_as_bytes(msg.value()),
            headers=[(k, v if v is not None else b"") for k, v in msg.headers() or ()],
        )

    @classmethod
    def of_event(cls, event: Event, exc: BaseException) -> Poison:
        """The poison record for a decoded event that the rules raised on."""
        topic, partition, offset = event.coordinates or ("", -1, -1)
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            error=f"rule evaluation failed: {type(exc).__name__}: {str(exc)[:500]}",
            error_class=type(exc).__name__,
            key=event.key.encode("utf-8", "surrogatepass"),
            value=record_value(event),
            headers=record_headers(event),
        )

    def reason_headers(self) -> RawHeaders:
        return [
            ("error", self.error.encode("utf-8", "replace")[:2000]),
            ("error-class", self.error_class.encode()),
            ("source-topic", self.topic.encode()),
            ("source-partition", str(self.partition).encode()),
            ("source-offset", str(self.offset).encode()),
        ]

    def dlq_copy(
        self, max_bytes: int = DLQ_MAX_BYTES
    ) -> tuple[bytes | None, bytes | None, RawHeaders]:
        """Key, value and headers of the dead-letter copy, cut to fit in ``max_bytes``."""
        reason = self.reason_headers()
        budget = max_bytes - _OVERHEAD - sum(len(k) + len(v) for k, v in reason)
        own = self.headers
        own_size = sum(len(k) + len(v) for k, v in own)
        notes: RawHeaders = []
        if own_size > budget // 4:
            notes.append(("dlq-headers-dropped", str(len(own)).encode()))
            own, own_size = [], 0
        budget -= own_size
        key, value = self.key, self.value
        key_len, value_len = len(key or b""), len(value or b"")
        if key_len + value_len > budget:
            key_cap = min(key_len, budget // 8)
            key = key[:key_cap] if key is not None else None
            value = value[: max(0, budget - key_cap)] if value is not None else None
            notes.append(("dlq-truncated", f"key={key_len},value={value_len}".encode()))
        return key, value, [*own, *reason, *notes]


def _as_bytes(data: str | bytes | None) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    return data.encode("utf-8", "surrogatepass")


class DeadLetters:
    """Produces poison records to the dead-letter topic; without a topic, logs them only.

    ``producer`` is a confluent-kafka ``Producer`` (idempotent, ``acks=all``) owned by
    the caller; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        producer: Any | None,
        topic: str | None,
        *,
        flush_timeout: float = 30.0,
        max_bytes: int = DLQ_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._flush_timeout = flush_timeout
        self._max_bytes = max_bytes
        self._clock = clock

    def send(self, poison: Sequence[Poison]) -> None:
        """Produce every record and wait for the broker's acknowledgement of all of them."""
        if not poison:
            return
        if self._producer is None or self._topic is None:
            for p in poison:
                log.warning(
                    "poison record %s[%d]@%d (%s); no dead-letter topic configured, kept in "
                    "the store only",
                    p.topic,
                    p.partition,
                    p.offset,
                    p.error,
                )
            return
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        deadline = self._clock() + self._flush_timeout
        for p in poison:
            key, value, headers = p.dlq_copy(self._max_bytes)
            while True:
                try:
                    self._producer.produce(
                        self._topic, key=key, value=value, headers=headers, on_delivery=delivered
                    )
                    break
                except BufferError:  # the local queue is full: let it drain, within bounds
                    if self._clock() > deadline:
                        raise KafkaClientError(
                            f"dead-letter topic {self._topic}: producer queue full"
                        ) from None
                    self._producer.poll(0.1)
        left = max(0.0, deadline - self._clock())
        if self._producer.flush(left) != 0:
            raise KafkaClientError(
                f"dead-letter topic {self._topic} did not acknowledge {len(poison)} record(s) "
                f"in {self._flush_timeout:g}s"
            )
        if failed:
            raise KafkaClientError(
                f"dead-letter topic {self._topic} refused {len(failed)} record(s): {failed[0]}"
            )
