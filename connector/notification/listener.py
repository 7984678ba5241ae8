"""Listeners: the processor contract, key filters, start offsets and the listener thread.

A listener thread owns its consumer (partitions *assigned*, not subscribed: no rebalance
wait) and hands ``process(events)`` the batches of events whose key matches (exact or
glob) and whose ``namespace`` header is the listener's (a record without that header
belongs to the topic's namespace, or to none when several namespaces share the topic).
Per batch, in this order:

1. ``consume`` up to ``max_batch`` records (those already fetched at once, else the
   first within ``poll_timeout`` and what came with it: :func:`kec.kafka.fetch_batch`);
   undecodable records are logged with their ``topic[partition]@offset`` and skipped;
2. ``process(events)``; when it raises, the error is logged and the *same* batch is
   retried with exponential backoff (each wait at most ``retry_backoff_max`` seconds) until
   it succeeds or the listener is stopped — at-least-once to the processor;
3. commit the batch's next offsets to the listener's group, synchronously. A failed commit
   is retried with the next batch; a batch not yet processed is never committed.

Where a listener starts is decided by :func:`start_offsets` before the thread runs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential,
)

from kec.codec import event_from_message
from kec.errors import DecodeError
from kec.event import H_NAMESPACE, Event
from kec.kafka import (
    KafkaException,
    checked,
    fetch_batch,
    is_eof,
    is_fatal,
    kafka_tp,
    retried,
    watermarks,
)

__all__ = ["KeyFilter", "ListenerProcessor", "ListenerThread", "derived_group", "start_offsets"]

log = logging.getLogger(__name__)


class ListenerProcessor(ABC):
    """What a listener does with the events it receives (AIFlow's ``ListenerProcessor``)."""

    @abstractmethod
    def process(self, events: list[Event]) -> None:
        """Handle one batch; raising makes the listener retry the same batch later."""


class KeyFilter:
    """Event keys to listen to: exact keys, or glob patterns (``*``, ``?``, ``[...]``)."""

    def __init__(self, event_keys: Iterable[str]) -> None:
        keys = [event_keys] if isinstance(event_keys, str) else list(event_keys)
        if not keys or not all(isinstance(k, str) and k for k in keys):
            raise ValueError("event_keys must name at least one non-empty key")
        self.keys = tuple(sorted(set(keys)))
        self._exact = {k for k in keys if not _is_glob(k)}
        self._globs = [k for k in keys if _is_glob(k)]

    def matches(self, key: str) -> bool:
        return key in self._exact or any(fnmatch.fnmatchcase(key, g) for g in self._globs)


def _is_glob(key: str) -> bool:
    return any(c in key for c in "*?[")


def derived_group(namespace: str, processor: ListenerProcessor, keys: KeyFilter) -> str:
    """A group id stable across processes for the same (namespace, processor class, keys)."""
    kind = f"{type(processor).__module__}.{type(processor).__qualname__}"
    digest = hashlib.sha256("\0".join((kind, *keys.keys)).encode()).hexdigest()[:16]
    return f"kec-listener.{namespace}.{digest}"


def start_offsets(
    consumer: Any,
    topic: str,
    partitions: list[int],
    begin_offset: int | Mapping[int, int] | None,
    begin_time: int | None,
    *,
    request_timeout: float,
    attempt_timeout: float,
) -> dict[int, int]:
    """Where each partition starts, first match wins, committed to the group at once.

    ``begin_time`` (the first record at or after it), ``begin_offset`` (one offset, or per
    partition), the group's committed offset, else the partition's end now; clamped into
    the partition's current range.
    """

    def call(what: str, fn: Any, *args: Any) -> Any:
        return retried(what, lambda: fn(*args), request_timeout)

    tps = [kafka_tp((topic, p)) for p in partitions]
    at_time: dict[int, int] = {}
    if begin_time is not None:
        wanted = [kafka_tp((topic, p), begin_time) for p in partitions]
        found = call("finding offsets by time", consumer.offsets_for_times, wanted, attempt_timeout)
        at_time = {tp.partition: tp.offset for tp in checked(found)}
    committed = {
        tp.partition: tp.offset
        for tp in checked(
            call("reading committed offsets", consumer.committed, tps, attempt_timeout)
        )
    }
    starts: dict[int, int] = {}
    for p in partitions:
        low, high = call(
            f"reading the range of {topic}[{p}]",
            watermarks,
            consumer,
            kafka_tp((topic, p)),
            attempt_timeout,
        )
        if begin_time is not None:
            start = at_time[p] if at_time[p] >= 0 else high  # -1: nothing that late yet
        elif isinstance(begin_offset, int):
            start = begin_offset
        elif begin_offset is not None and p in begin_offset:
            start = begin_offset[p]
        else:
            start = committed[p] if committed[p] >= 0 else high
        starts[p] = min(max(start, low), high)
    # Pin the start in the group, so a listener unregistered before a partition had
    # any record resumes there rather than at a later end (losing what came between).
    moved = [kafka_tp((topic, p), o) for p, o in starts.items() if o != committed[p]]
    if moved:

        def commit() -> list[Any]:
            return checked(consumer.commit(offsets=moved, asynchronous=False))

        retried("committing the start offsets", commit, request_timeout)
    return starts


class ListenerThread:
    """One registered listener: a thread that owns its consumer (see the module docstring)."""

    def __init__(
        self,
        listener_id: str,
        processor: ListenerProcessor,
        keys: KeyFilter,
        *,
        namespace: str,
        topic: str,
        group_id: str,
        consumer: Any,
        max_batch: int,
        poll_timeout: float,
        backoff: tuple[float, float],
        shared_topic: bool = False,
    ) -> None:
        self.listener_id = listener_id
        self.group_id = group_id
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"kec-listener-{listener_id}", daemon=True
        )
        self._processor = processor
        self._keys = keys
        self._namespace = namespace
        self._topic = topic
        self._consumer = consumer
        self._max_batch = max_batch
        self._poll_timeout = poll_timeout
        self._backoff = backoff  # (first wait, longest wait) between process() attempts
        self._pending: dict[int, int] = {}  # partition -> next offset, processed, uncommitted
        # On a topic of several namespaces a record must say which one is its own.
        self._header_required = shared_topic

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = self._consume()
                if batch is None:
                    break
                events, offsets = batch
                if events and (self.stop.is_set() or not self._deliver(events)):
                    break  # unregistered while retrying: this batch stays uncommitted
                self._pending.update(offsets)
                self._commit()
        except Exception:
            log.exception(
                "listener %s on %s stopped by an unexpected error", self.listener_id, self._topic
            )
        finally:
            self._commit()
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("listener %s: closing its consumer failed: %s", self.listener_id, exc)

    def _consume(self) -> tuple[list[Event], dict[int, int]] | None:
        """Step 1: the next batch of matching events and the offsets it moves past."""
        try:
            messages = fetch_batch(self._consumer, self._max_batch, self._poll_timeout * 1000)
        except KafkaException as exc:
            log.error("listener %s: consumer failed, stopping: %s", self.listener_id, exc)
            return None
        events: list[Event] = []
        offsets: dict[int, int] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if is_fatal(error):
                    log.error(
                        "listener %s: fatal consumer error: %s", self.listener_id, error.str()
                    )
                    return None
                if not is_eof(error):
                    log.warning("listener %s: %s", self.listener_id, error.str())
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None:  # only error events lack them
                continue
            offsets[partition] = offset + 1
            if self._header_required and not _has_namespace(msg):
                log.warning(
                    "listener %s: skipping record %s[%d]@%d without a namespace header on a "
                    "topic shared by several namespaces",
                    self.listener_id,
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                )
                continue
            try:
                event = event_from_message(msg, self._namespace)
            except DecodeError as exc:
                log.warning(
                    "listener %s: skipping undecodable record %s[%d]@%d: %s",
                    self.listener_id,
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    exc,
                )
                continue
            if event.namespace == self._namespace and self._keys.matches(event.key):
                events.append(event)
        return events, offsets

    def _deliver(self, events: list[Event]) -> bool:
        """Step 2: ``process`` until it succeeds (True) or the listener is stopped (False)."""

        def failed(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.error(
                "listener %s: %s.process failed on %d events (attempt %d), same batch again "
                "in %.2fs",
                self.listener_id,
                type(self._processor).__qualname__,
                len(events),
                state.attempt_number,
                state.upcoming_sleep,
                exc_info=exc,
            )

        def pause(seconds: float) -> None:
            if self.stop.wait(seconds):  # unregistered: no further attempt
                raise _Stopped

        retrying = Retrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential(multiplier=self._backoff[0], max=self._backoff[1]),
            stop=stop_when_event_set(self.stop),
            sleep=pause,
            before_sleep=failed,
        )
        try:
            retrying(lambda: self._processor.process(list(events)))
        except (RetryError, _Stopped):
            log.error(
                "listener %s: unregistered while %d events were failing; they are not "
                "committed and go to the group's next listener",
                self.listener_id,
                len(events),
            )
            return False
        return True

    def _commit(self) -> None:
        """Step 3: commit processed offsets; keep what failed for the next attempt."""
        if not self._pending:
            return
        offsets = [kafka_tp((self._topic, p), o) for p, o in sorted(self._pending.items())]
        try:
            done = self._consumer.commit(offsets=offsets, asynchronous=False)
        except (KafkaException, RuntimeError) as exc:
            log.warning("listener %s: commit failed, retried later: %s", self.listener_id, exc)
            return
        for tp in done or ():
            if tp.error is None and self._pending.get(tp.partition) == tp.offset:
                del self._pending[tp.partition]


def _has_namespace(msg: Any) -> bool:
    return any(name == H_NAMESPACE and value for name, value in msg.headers() or ())


class _Stopped(Exception):
    """The listener was unregistered during a retry backoff."""
