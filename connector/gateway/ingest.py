"""The HTTP gateway's engine: Kafka in, confirmation from the store, waiters out
(see docs/architecture.md, "The HTTP gateway").

The gateway only *produces*: the connector's pipeline (``event-connector run`` with the
same ``http:`` section) reads the gateway's topic in its own consumer group, with its
other topics, and checkpoints HTTP events like any other event, rules included. A
``send`` goes through these steps, in this order, and answers only after step 3:

1. **produce** the event to the gateway topic with the idempotent producer
   (``acks=all``): key = the body's ``event_key`` (the record key too, so the events of
   one key, and so of one ``(workflow_id, event_key)``, stay in order on one partition),
   ``context`` = the workflow id, ``event-id`` header = the ``Idempotency-Key`` (else a
   fresh uuid), and the pair again in the ``workflow-id``/``event-key`` headers, which
   the waiters go by. A rule matches these events with ``key: <event_key>`` and, for one
   workflow, ``context: <workflow_id>``. No broker acknowledgement within
   ``deliver_timeout`` raises :class:`~kec.errors.BrokerUnavailable` (HTTP 503).
2. **checkpoint**, by the pipeline that reads the topic: one store transaction that
   dedups by event id, evaluates the rules and writes the event's waiter-queue row
   (:class:`~connector.gateway.waiters.HttpIndex`), then the Kafka offsets are committed.
3. **confirm**: the handler looks its event id up in the store
   (:meth:`~checkpoint.base.CheckpointStore.get_event`) until it is there, with a
   backoff from :data:`POLL_FIRST` to :data:`POLL_MAX` seconds; inside ``run`` the
   pipeline also wakes it after each batch that held HTTP events (:meth:`Gateway.checkpointed`).
   Found: the stored event's offset is returned (for a resend, the first copy's). Not
   there within ``checkpoint_timeout`` raises :class:`~kec.errors.CheckpointError`
   (HTTP 500): the record is in Kafka and is checkpointed whenever a connector reads
   it, so a resend with the same ``Idempotency-Key`` is safe. A gateway with no
   connector reading its topic answers every send so.

``wait`` (a listener's long poll) reads the pair's queue rows from the store, in arrival
order, and returns the first event that is neither consumed (durable step mark written by
``consume``, which also deletes the row) nor leased to another listener. Handlers look
again at least every :data:`RECHECK` seconds, so an event checkpointed by a connector in
another process is seen too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from checkpoint.base import CheckpointStore
from connector.gateway.waiters import (
    H_EVENT_KEY,
    H_WORKFLOW_ID,
    Leases,
    Pair,
    Waiters,
    consumed_step,
    queue_prefix,
    queue_row_of,
)
from kec import kafka
from kec.codec import MAX_EVENT_BYTES, check_outgoing, key_problem, record_value
from kec.errors import BrokerUnavailable, CheckpointError, DecodeError, KafkaClientError
from kec.event import CONTENT_JSON, Event
from kec.kafka import Connection, KafkaError, KafkaException, Message, Producer

__all__ = ["EventRefused", "Gateway", "GatewaySettings", "SendResult"]

log = logging.getLogger(__name__)

RECHECK = 0.5  # seconds: the longest a long poll trusts "nothing yet" without looking again
POLL_FIRST = 0.02  # seconds before a send first looks for its event again
POLL_MAX = 0.25  # seconds between two looks at most (the backoff doubles up to this)
QUEUE_PAGE = 64  # queue rows read at once by a long poll


@dataclass(frozen=True)
class GatewaySettings:
    connection: Connection
    topic: str = "http-events"
    namespace: str = "http"
    strict: bool = False
    deliver_timeout: float = 5.0  # seconds for Kafka to acknowledge (else 503)
    checkpoint_timeout: float = 15.0  # seconds for the store to hold the event (else 500)
    lease_seconds: float = 30.0
    waiter_ttl: float = 30.0
    # The pipeline's pipeline.max_event_bytes: a larger event is refused (413), not sent
    # to a dead letter while its client waits for a checkpoint that never comes.
    max_event_bytes: int | None = MAX_EVENT_BYTES

    def producer_config(self) -> dict[str, Any]:
        return {
            "linger.ms": 2,
            **self.connection.client_config(),
            "message.timeout.ms": int(self.deliver_timeout * 1000),
        }


class EventRefused(DecodeError):
    """An event the pipeline would send to the dead letters: the request's fault (4xx)."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


@dataclass(frozen=True, slots=True)
class SendResult:
    event_id: str
    offset: int | None
    partition: int | None


class Gateway:
    """Producer and waiters of one gateway instance; the store is read for confirmations.

    The store is opened and closed by the caller. :meth:`start` and :meth:`close` run on
    the event loop that serves the requests.
    """

    def __init__(self, settings: GatewaySettings, store: CheckpointStore) -> None:
        self.settings = settings
        self._store = store
        self.waiters = Waiters(ttl=settings.waiter_ttl)
        self._leases = Leases(seconds=settings.lease_seconds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick: asyncio.Event | None = None
        self._draining = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._tick = asyncio.Event()
        self._producer = kafka.producer(self.settings.producer_config())
        self._thread = threading.Thread(
            target=self._serve_producer, name="kec-gw-producer", daemon=True
        )
        self._thread.start()
        log.debug(
            "gateway: writes topic %s (namespace %s); a send is confirmed once a connector "
            "reading that topic has checkpointed it (within %gs, else 500)",
            self.settings.topic,
            self.settings.namespace,
            self.settings.checkpoint_timeout,
        )

    def checkpointed(self) -> None:
        """A batch with HTTP events was checkpointed: look in the store now. Thread-safe
        (the pipeline of the connector the gateway runs in calls it)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake)

    def drain(self) -> None:
        """Answer open long polls now ("nothing yet"), ahead of a shutdown. Thread-safe."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._set_draining)

    async def close(self) -> None:
        """Stop serving the producer and flush it; idempotent."""
        self._set_draining()
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 30)
        producer, self._producer = self._producer, None
        if producer is not None:
            await asyncio.to_thread(producer.flush, self.settings.deliver_timeout)

    def _set_draining(self) -> None:
        self._draining = True
        self._wake()

    def _wake(self) -> None:
        """On the loop: wake every handler waiting for the next look at the store."""
        old, self._tick = self._tick, asyncio.Event()
        if old is not None:
            old.set()

    def _next_tick(self) -> asyncio.Event:
        """Set by the next :meth:`_wake`; take it *before* looking at the store, so a wake
        between the look and :meth:`_pause` is not missed."""
        tick = self._tick
        assert tick is not None, "the gateway is not started"
        return tick

    @staticmethod
    async def _pause(tick: asyncio.Event, seconds: float) -> None:
        """Sleep up to ``seconds``, less when ``tick`` is set first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await tick.wait()

    # -- sending -----------------------------------------------------------------------

    async def send(
        self, workflow_id: str, event_key: str, payload: Any, event_id: str | None = None
    ) -> SendResult:
        """Steps 1–3 of the module docstring; returns once the event is checkpointed."""
        for name, text in (("workflow_id", workflow_id), ("event_key", event_key)):
            if (problem := key_problem(text)) is not None:
                raise EventRefused(f"{name} {problem}")
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
        try:
            record = check_outgoing(event, self.settings.max_event_bytes)
        except DecodeError as exc:
            limit = self.settings.max_event_bytes
            raise EventRefused(
                f"the pipeline would refuse this event: {exc}",
                too_large=limit is not None and len(record_value(event)) > limit,
            ) from exc
        await self._produce(*record)
        stored = await self._await_checkpoint(event.event_id)
        return SendResult(event.event_id, stored.offset, stored.partition)

    async def _produce(
        self, key: bytes, value: bytes, record_headers: list[tuple[str, bytes]]
    ) -> None:
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise KafkaClientError("the gateway is not started")
        delivered: asyncio.Future[None] = loop.create_future()
        headers: list[tuple[str, str | bytes | None]] = list(record_headers)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, delivered, err)

        try:
            producer.produce(
                self.settings.topic,
                key=key,
                value=value,
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
        delay = POLL_FIRST
        while True:
            tick = self._next_tick()
            stored = await self._stored(event_id)
            if stored is not None:
                return stored
            left = deadline - time.monotonic()
            if left <= 0:
                timeout = self.settings.checkpoint_timeout
                raise CheckpointError(
                    f"event {event_id} is in Kafka (topic {self.settings.topic}) but was not "
                    f"checkpointed within {timeout:g}s; a resend with 'Idempotency-Key: "
                    f"{event_id}' is safe. Events are checkpointed by a connector (event-connector"
                    " run) with the same http: section reading that topic"
                )
            await self._pause(tick, min(left, delay))
            delay = min(POLL_MAX, delay * 2)

    async def _stored(self, event_id: str) -> Event | None:
        return await asyncio.to_thread(self._store.get_event, event_id, self.settings.namespace)

    # -- waiting (listeners) -----------------------------------------------------------

    async def wait(self, pair: Pair, timeout: float) -> Event | None:  # noqa: ASYNC109
        """The pair's first unconsumed, unleased event (leased now), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        self.waiters.enter(pair)
        try:
            while True:
                tick = self._next_tick()
                event = await self._first_free(pair)
                if event is not None:
                    return event
                left = deadline - time.monotonic()
                if left <= 0 or self._draining:
                    return None
                await self._pause(tick, min(left, RECHECK))
        finally:
            self.waiters.leave(pair)

    async def _first_free(self, pair: Pair) -> Event | None:
        """The pair's first checkpointed event that is neither consumed nor leased, leased
        now; pages through the queue's rows in arrival order."""
        prefix = queue_prefix(self.settings.namespace, *pair)
        after: str | None = None
        while True:
            leased = self._leases.held()
            last, events = await asyncio.to_thread(self._page, prefix, after, leased)
            for event in events:
                if self._leases.take(event.event_id):
                    return event
            if last is None:
                return None
            after = last

    def _page(
        self, prefix: str, after: str | None, leased: frozenset[str]
    ) -> tuple[str | None, list[Event]]:
        """Blocking: one page of queue rows -> (the last row's key when the page was full,
        the events of the page not leased, not consumed and still stored).

        Plain reads of the last committed state: a long poll never takes a write lock.
        """
        rows = self._store.read_rule_state_range(prefix, QUEUE_PAGE, after)
        events = []
        for _, event_id in rows:
            if event_id in leased or self._store.get_step(consumed_step(event_id)) is not None:
                continue
            event = self._store.get_event(event_id, self.settings.namespace)
            if event is not None:
                events.append(event)
        return (rows[-1][0] if len(rows) == QUEUE_PAGE else None), events

    async def consume(self, event_id: str) -> Event | None:
        """Mark a checkpointed event consumed (durably; idempotent) and delete its queue
        row, so the queue holds only what still waits; None if unknown."""
        event = await self._stored(event_id)
        if event is None:
            return None
        await self._store.put_step_async(consumed_step(event_id), event)
        row = queue_row_of(event)
        if row is not None:
            await asyncio.to_thread(self._drop_row, row)
        self._leases.release(event_id)
        return event

    def _drop_row(self, row: str) -> None:
        with self._store.batch() as tx:
            tx.write_rule_state({row: None})

    # -- the producer's thread --------------------------------------------------------

    def _serve_producer(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stop.is_set():
            producer.poll(0.1)  # runs the delivery callbacks


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(BrokerUnavailable(f"Kafka did not accept the event: {err.str()}"))
