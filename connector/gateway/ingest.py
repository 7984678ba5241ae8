"""The HTTP gateway's engine: Kafka in, checkpoint store, waiters out (see docs/architecture.md).

A ``send`` goes through these steps, in this order, and answers only after step 3:

1. **produce** the event to the gateway topic with the idempotent producer
   (``acks=all``): key = the body's ``event_key`` (the record key too, so the events of
   one key, and so of one ``(workflow_id, event_key)``, stay in order on one partition),
   ``context`` = the workflow id, ``event-id`` header = the ``Idempotency-Key`` (else a
   fresh uuid), and the pair again in the ``workflow-id``/``event-key`` headers, which
   the waiters go by. A rule matches these events with ``key: <event_key>`` and, for one
   workflow, ``context: <workflow_id>``. No broker
   acknowledgement within ``deliver_timeout`` raises
   :class:`~kec.errors.BrokerUnavailable` (HTTP 503).
2. **checkpoint**: the gateway's own :class:`~connector.runtime.Pipeline` (a consumer
   group on the topic, in a thread) inserts the batch into the store in one transaction
   — dedup by event id — with each new event's id appended to its pair's queue
   (:class:`~connector.gateway.waiters.HttpIndex`), then commits the Kafka offsets.
3. **confirm**: after every batch the pipeline thread wakes the request handlers, which
   look their event id up in the store. Found: the stored event's offset is returned
   (for a resend, the first copy's). A failed batch, or nothing within
   ``checkpoint_timeout``, raises :class:`~kec.errors.CheckpointError` (HTTP 500);
   the record stays in Kafka and is checkpointed when the store recovers, so a resend
   with the same ``Idempotency-Key`` is safe.

``wait`` (a listener's long poll) reads the pair's queue from the store and returns the
first event that is neither consumed (durable step mark written by ``consume``) nor
leased to another listener. Handlers re-check the store at least every
:data:`RECHECK` seconds, so an event checkpointed by another gateway instance sharing the
store and group is seen too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from checkpoint.base import CheckpointStore
from connector.gateway.waiters import (
    H_EVENT_KEY,
    H_WORKFLOW_ID,
    HttpIndex,
    Leases,
    Pair,
    Waiters,
    consumed_step,
    decode_queue,
    pair_of,
    queue_key,
)
from connector.runtime import ActionSink, Pipeline, PipelineSettings, Undispatched
from kec import kafka
from kec.codec import record_headers, record_value
from kec.errors import BrokerUnavailable, CheckpointError, KafkaClientError
from kec.evaluation import Evaluator
from kec.event import CONTENT_JSON, Event

__all__ = ["Gateway", "GatewaySettings", "SendResult"]

log = logging.getLogger(__name__)

RECHECK = 0.5  # seconds: the longest a handler trusts "not there yet" without looking again


@dataclass(frozen=True)
class GatewaySettings:
    bootstrap_servers: str
    topic: str = "http-events"
    namespace: str = "http"
    group_id: str | None = None  # default: kec-gateway-<topic>
    strict: bool = False
    deliver_timeout: float = 5.0  # seconds for Kafka to acknowledge (else 503)
    checkpoint_timeout: float = 15.0  # seconds for the store to hold the event (else 500)
    lease_seconds: float = 30.0
    waiter_ttl: float = 30.0
    batch_size: int = 500
    linger_ms: int = 5
    kafka_properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.group_id or f"kec-gateway-{self.topic}"

    def pipeline_settings(self, with_rules: bool) -> PipelineSettings:
        return PipelineSettings(
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group,
            topics={self.topic: self.namespace},
            batch_size=self.batch_size,
            linger_ms=self.linger_ms,
            kafka_properties=self.kafka_properties,
            # Without rules the gateway queues no actions: never pause on someone else's.
            outbox_max_pending=100_000 if with_rules else sys.maxsize,
        )

    def producer_config(self) -> dict[str, Any]:
        return {
            "linger.ms": 2,
            **self.kafka_properties,
            "bootstrap.servers": self.bootstrap_servers,
            "message.timeout.ms": int(self.deliver_timeout * 1000),
        }


@dataclass(frozen=True, slots=True)
class SendResult:
    event_id: str
    offset: int | None
    partition: int | None


@dataclass(slots=True)
class _Tick:
    """The next batch attempt: ``done`` is set when it ends, ``error`` if it rolled back."""

    done: asyncio.Event
    error: BaseException | None = None


class Gateway:
    """Producer, checkpointing pipeline and waiters of one gateway instance.

    The store is opened and closed by the caller. :meth:`start` and :meth:`close` run on
    the event loop that serves the requests.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        store: CheckpointStore,
        *,
        rules: Evaluator | None = None,
        sink: ActionSink | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._rules = rules
        # The connector's dispatcher when both run: the gateway's pipeline owns the
        # gateway topic's partitions, so the actions born from them are its to dispatch.
        self._sink = sink or Undispatched()
        self.waiters = Waiters(ttl=settings.waiter_ttl)
        self._leases = Leases(seconds=settings.lease_seconds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tick: _Tick | None = None
        self._draining = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._tick = _Tick(asyncio.Event())
        self._producer = kafka.producer(self.settings.producer_config())
        pipeline = Pipeline(
            self.settings.pipeline_settings(self._rules is not None),
            self._store,
            HttpIndex(self._rules),
            self._sink,
        )
        self._threads = [
            threading.Thread(target=self._serve_producer, name="kec-gw-producer", daemon=True),
            threading.Thread(
                target=self._checkpoint_loop, args=(pipeline,), name="kec-gw-pipeline", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()
        log.info("gateway: topic %s, group %s", self.settings.topic, self.settings.group)

    def drain(self) -> None:
        """Answer open long polls now ("nothing yet"), ahead of a shutdown. Thread-safe."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._set_draining)

    async def close(self) -> None:
        """Stop the pipeline (finishing its batch) and flush the producer; idempotent."""
        self._set_draining()
        self._stop.set()
        threads, self._threads = self._threads, []
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.flush, self.settings.deliver_timeout)

    def _set_draining(self) -> None:
        self._draining = True
        self._wake(None)

    # -- sending -----------------------------------------------------------------------

    async def send(
        self, workflow_id: str, event_key: str, payload: Any, event_id: str | None = None
    ) -> SendResult:
        """Steps 1–3 of the module docstring; returns once the event is checkpointed."""
        if event_id:
            stored = await self._stored(event_id)
            if stored is not None:  # a resend of a checkpointed event: nothing to do
                return SendResult(event_id, stored.offset, stored.partition)
        event = Event(
            key=event_key,
            value=json.dumps(payload, separators=(",", ":")),
            namespace=self.settings.namespace,
            sender="http-gateway",
            context=workflow_id,
            event_type=CONTENT_JSON,
            headers=((H_WORKFLOW_ID, workflow_id.encode()), (H_EVENT_KEY, event_key.encode())),
            event_id=event_id or uuid.uuid4().hex,
        )
        await self._produce(event)
        stored = await self._await_checkpoint(event.event_id)
        return SendResult(event.event_id, stored.offset, stored.partition)

    async def _produce(self, event: Event) -> None:
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise KafkaClientError("the gateway is not started")
        delivered: asyncio.Future[None] = loop.create_future()
        headers: list[tuple[str, str | bytes | None]] = list(record_headers(event))

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, delivered, err)

        try:
            producer.produce(
                self.settings.topic,
                key=event.key.encode(),
                value=record_value(event),
                headers=headers,
                on_delivery=on_delivery,
            )
        except (BufferError, KafkaException) as exc:
            raise BrokerUnavailable(f"cannot queue the event for Kafka: {exc}") from exc
        # The producer's own message.timeout.ms settles the future; this only guards it.
        async with asyncio.timeout(self.settings.deliver_timeout + 5):
            await delivered

    async def _await_checkpoint(self, event_id: str) -> Event:
        deadline = time.monotonic() + self.settings.checkpoint_timeout
        while True:
            tick = self._tick
            assert tick is not None
            stored = await self._stored(event_id)
            if stored is not None:
                return stored
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckpointError(
                    f"event {event_id} is in Kafka but was not checkpointed within "
                    f"{self.settings.checkpoint_timeout:g}s"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, RECHECK)):
                    await tick.done.wait()
            failed = tick.error
            if failed is not None and await self._stored(event_id) is None:
                raise CheckpointError(f"checkpointing failed: {failed}") from failed

    async def _stored(self, event_id: str) -> Event | None:
        return await asyncio.to_thread(self._store.get_event, event_id, self.settings.namespace)

    # -- waiting (listeners) -----------------------------------------------------------

    async def wait(self, pair: Pair, timeout: float) -> Event | None:  # noqa: ASYNC109
        """The pair's first unconsumed, unleased event (leased now), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        self.waiters.enter(pair)
        try:
            while True:
                tick = self._tick
                assert tick is not None
                for event in await asyncio.to_thread(self._candidates, pair):
                    if self._leases.take(event.event_id):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self._draining:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, RECHECK)):
                        await tick.done.wait()
        finally:
            self.waiters.leave(pair)

    def _candidates(self, pair: Pair) -> list[Event]:
        """Blocking: the pair's checkpointed events that are not consumed, in arrival order.

        Plain reads of the last committed state: a long poll never takes a write lock.
        """
        key = queue_key(*pair)
        ids = decode_queue(self._store.read_rule_state([key]).get(key))
        events = []
        for event_id in ids:
            if self._store.get_step(consumed_step(event_id)) is not None:
                continue
            event = self._store.get_event(event_id, self.settings.namespace)
            if event is not None:
                events.append(event)
        return events

    async def consume(self, event_id: str) -> Event | None:
        """Mark a checkpointed event consumed (durably; idempotent) and take its id off
        its pair's queue, so the queue holds only what still waits; None if unknown."""
        event = await self._stored(event_id)
        if event is None:
            return None
        await asyncio.to_thread(self._store.put_step, consumed_step(event_id), event)
        pair = pair_of(event)
        if pair is not None:
            await asyncio.to_thread(self._trim, queue_key(*pair), event_id)
        self._leases.release(event_id)
        return event

    def _trim(self, key: str, event_id: str) -> None:
        # In a batch transaction: the queue's key is locked as the pipeline's own writes
        # lock it, so an id appended meanwhile is not lost.
        with self._store.batch() as tx:
            ids = decode_queue(tx.read_rule_state([key]).get(key))
            if event_id in ids:
                ids.remove(event_id)
                tx.write_rule_state({key: json.dumps(ids, separators=(",", ":")) if ids else None})

    # -- threads -----------------------------------------------------------------------

    def _wake(self, error: BaseException | None) -> None:
        """On the loop: finish the current tick and start the next one."""
        old = self._tick
        self._tick = _Tick(asyncio.Event())
        if old is not None:
            old.error = error
            old.done.set()

    def _notify(self, error: BaseException | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake, error)

    def _serve_producer(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stop.is_set():
            producer.poll(0.1)  # runs the delivery callbacks

    def _checkpoint_loop(self, pipeline: Pipeline) -> None:
        try:
            pipeline.start()
            while not self._stop.is_set():
                try:
                    count = pipeline.run_once()
                except Exception as exc:
                    # The batch rolled back and was rewound; tell waiting senders, retry.
                    log.warning("gateway checkpoint batch failed, retrying: %s", exc)
                    self._notify(exc)
                    self._stop.wait(0.5)
                else:
                    if count:
                        self._notify(None)
        except Exception:
            log.exception("gateway pipeline stopped")
        finally:
            with contextlib.suppress(Exception):
                pipeline.close()


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(BrokerUnavailable(f"Kafka did not accept the event: {err.str()}"))
