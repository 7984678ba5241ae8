"""Step 4 of the protocol: the owner of a partition delivers the actions born from it.

The pipeline hands each checkpointed batch's actions to the :class:`Dispatcher` in
memory (:meth:`Dispatcher.queue`); the store is read only when a partition is assigned
(:meth:`Dispatcher.adopt`) and, once a second, for retries that tools put back
(``dlq replay``, ``replay``). One coordinator thread runs the rounds:

1. take the lane heads that are due (:class:`~connector.lanes.PartitionBook`): actions of
   different (target, key) lanes go out concurrently, one lane's in order;
2. hand them to their target's workers: up to ``target.concurrency`` calls of
   ``deliver_many`` at once, ``target.batch_size`` actions each. A transient failure is
   retried in place a few times (tenacity) before the call reports it;
3. record each answer in the book: delivered; or failed, with a retry at
   ``next_delay(attempts)``, or dead after the last attempt or a refusal for good;
4. every ``settle_interval`` (and at revoke and stop), write each partition's settlement
   (watermark, parked rows) in one store transaction, fenced by the partition's epoch.

Crash anywhere in 2–4 and the actions not settled are delivered again by the next owner
with the same ids, which the target deduplicates (crash points ``mid_dispatch``: some
answers recorded, others not; ``after_dispatch``: delivered, not yet settled).

Ownership: a partition is dispatched only while this instance owns it. On revoke,
:meth:`Dispatcher.release` waits for its deliveries in flight, writes its last
settlement and forgets it; a settlement refused for a stale epoch drops the partition at
once. Every ``verify_interval``, and after any pause of the coordinator longer than
that (SIGSTOP, a long GC), the owner epochs are read back before anything else is
delivered, so an instance that was paused past its session timeout stops at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from checkpoint.base import CheckpointStore, Claim, Settlement, TopicPartition
from connector.lanes import Entry, PartitionBook
from connector.metrics_core import LATENCY_BUCKETS, Histogram
from connector.outage import Outage, cause_of
from connector.retry import RetryPolicy
from connector.targets.base import Target
from kec.action import Action
from kec.errors import CheckpointError, TargetError
from kec.faults import crash_point

log = logging.getLogger(__name__)


def _transient(exc: BaseException | None) -> bool:
    return isinstance(exc, TargetError) and exc.retriable


@dataclass
class DispatchStats:
    delivered: int = 0
    failed: int = 0  # failed attempts (each followed by a retry)
    dead: int = 0
    fenced: int = 0  # partitions dropped because another instance owns them
    delivered_by_target: Counter[str] = field(default_factory=Counter)
    failed_by_target: Counter[str] = field(default_factory=Counter)
    dead_by_target: Counter[str] = field(default_factory=Counter)
    # From an action reaching the dispatcher (checkpointed, or loaded) to its delivery.
    delivery: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    store_ok: bool = True  # the last settlement or ownership check went through


@dataclass(frozen=True, slots=True)
class _Call:
    """Actions handed to one of a target's workers in one ``deliver_many``."""

    target: str
    entries: list[tuple[PartitionBook, Entry]]


@dataclass(frozen=True)
class _Result:
    target: str
    entries: list[tuple[PartitionBook, Entry]]
    failures: Mapping[str, BaseException]
    called: bool = False  # a call to the target (counted in flight) rather than a refusal


class _Command:
    """Work for the coordinator from another thread, with a reply to wait for."""

    def __init__(self, run: Callable[[], None]) -> None:
        self.run = run
        self.done = threading.Event()
        self.error: BaseException | None = None


class Dispatcher:
    """Delivers the actions of owned partitions; see the module docstring.

    Collaborators are passed in; nothing happens until :meth:`start`. Thread-safe: the
    pipeline threads call :meth:`adopt`, :meth:`queue` and :meth:`release`.
    """

    def __init__(
        self,
        store: CheckpointStore,
        targets: Mapping[str, Target],
        *,
        policy: RetryPolicy | None = None,
        settle_interval: float = 0.05,
        verify_interval: float = 2.0,
        retry_poll: float = 1.0,
        release_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._targets = targets
        self._policy = policy or RetryPolicy()
        self._settle_interval = settle_interval
        self._verify_interval = verify_interval
        self._retry_poll = retry_poll
        self._release_timeout = release_timeout
        self._clock = clock
        self._books: dict[TopicPartition, PartitionBook] = {}
        self._inbox: queue.SimpleQueue[_Command | _Result] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Per target: its calls waiting for a worker, and its worker threads.
        self._calls: dict[str, queue.SimpleQueue[_Call | None]] = {}
        self._workers: list[threading.Thread] = []
        self._in_flight: dict[str, int] = {}  # target -> calls in flight
        self._pending = 0  # actions not settled, all books (read by other threads)
        self._failures: dict[str, list[tuple[str, bool]]] = {}  # target -> (error, final)
        self._store_outage = Outage("checkpoint store (dispatcher)", log)
        self.stats = DispatchStats()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._open_workers()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kec-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the deliveries in flight, settle everything, stop; idempotent."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self._close_workers()

    def _open_workers(self) -> None:
        """``concurrency`` long-lived threads per target, fed by a queue: a call costs a
        put and a get, not a future and a thread-pool submission per action."""
        for name, target in self._targets.items():
            if name in self._calls:
                continue
            calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
            self._calls[name] = calls
            self._in_flight[name] = 0
            for i in range(max(1, target.concurrency)):
                worker = threading.Thread(
                    target=self._work, args=(target, calls), name=f"kec-{name}-{i}", daemon=True
                )
                worker.start()
                self._workers.append(worker)

    def _close_workers(self) -> None:
        for name, calls in self._calls.items():
            # Calls not yet taken are dropped, unsettled: their actions are delivered
            # again (same ids) by whoever owns the partition next.
            while not calls.empty():
                try:
                    calls.get_nowait()
                except queue.Empty:
                    break
            for _ in range(max(1, self._targets[name].concurrency)):
                calls.put(None)  # each worker takes one and ends after its call in progress
        self._calls.clear()
        self._workers.clear()

    def _work(self, target: Target, calls: queue.SimpleQueue[_Call | None]) -> None:
        while (call := calls.get()) is not None:
            try:
                failures = self._deliver(target, [e.action for _, e in call.entries])
            except BaseException as exc:  # deliver_many itself broke
                failures = {e.action.action_id: exc for _, e in call.entries}
            self._inbox.put(_Result(call.target, call.entries, failures, called=True))
            self._wake.set()

    def run_round(self) -> int:
        """One whole round in the calling thread, without the coordinator (tests, tools):
        hand out what is due, wait for every answer, settle. Returns how many actions
        were settled (delivered or dead)."""
        if self._thread is not None:
            raise RuntimeError("run_round() is for a dispatcher that was not started")
        self._open_workers()
        before = self.stats.delivered + self.stats.dead
        self._drain()
        while self._dispatch():
            self._await_results(lambda: not any(self._in_flight.values()))
        self._settle(list(self._books))
        self._report_failures()
        return self.stats.delivered + self.stats.dead - before

    @property
    def pending(self) -> int:
        """Actions of owned partitions not settled yet (for backpressure and metrics)."""
        return self._pending

    # -- from the pipeline ---------------------------------------------------------------

    def adopt(self, claims: Mapping[TopicPartition, Claim]) -> None:
        """Partitions just claimed: load what the store still holds for each."""
        books = {
            tp: PartitionBook.load(tp, c.epoch, self._store.pending(tp)) for tp, c in claims.items()
        }

        def add() -> None:
            for tp, book in books.items():
                old = self._books.pop(tp, None)
                if old is not None:
                    self._pending -= old.size
                self._books[tp] = book
                self._pending += book.size
            loaded = sum(b.size for b in books.values())
            if loaded:
                log.info("dispatching %d actions left pending by the previous owner(s)", loaded)

        self._call(add)

    def queue(self, tp: TopicPartition, first_aseq: int, actions: Sequence[Action]) -> None:
        """A batch's actions for ``tp``, numbered from ``first_aseq``, just checkpointed."""
        if not actions:
            return

        def add() -> None:
            book = self._books.get(tp)
            if book is None:  # released meanwhile: the next owner reads them from the store
                return
            book.queue(first_aseq, actions)
            self._pending += len(actions)

        self._post(add)

    def catch_up(self, tp: TopicPartition) -> None:
        """Load the actions of ``tp`` that the store holds and this dispatcher never got:
        the pipeline's batch committed though the pipeline saw the commit fail."""
        pending = self._store.pending(tp)

        def add() -> None:
            book = self._books.get(tp)
            if book is None:
                return
            found = book.catch_up(pending)
            self._pending += found
            if found:
                log.info(
                    "%s[%d]: %d actions of a batch whose commit was not acknowledged, "
                    "loaded from the store",
                    tp[0], tp[1], found,
                )  # fmt: skip

        self._call(add)

    def release(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop dispatching ``partitions``: wait for their deliveries in flight, write
        their last settlement, forget them. Blocks the caller (a revoke callback)."""
        tps = set(partitions)
        deadline = time.monotonic() + self._release_timeout

        def drained() -> bool:
            busy = any(self._books[tp].in_flight for tp in tps if tp in self._books)
            return not busy or time.monotonic() > deadline

        def release() -> None:
            for tp in tps:
                book = self._books.get(tp)
                if book is not None:
                    book.closing = True
            self._await_results(drained)
            try:
                self._settle([tp for tp in tps if tp in self._books])
            except CheckpointError as exc:
                # The next owner delivers again (same ids) what was not settled.
                log.warning(
                    "the last settlement of %d released partition(s) failed: %s",
                    len(tps), cause_of(exc),
                )  # fmt: skip
            finally:
                for tp in tps:
                    book = self._books.pop(tp, None)
                    if book is not None:
                        self._pending -= book.size

        self._call(release)

    # -- the coordinator -----------------------------------------------------------------

    def _post(self, run: Callable[[], None]) -> _Command:
        command = _Command(run)
        self._inbox.put(command)
        self._wake.set()
        return command

    def _call(self, run: Callable[[], None]) -> None:
        """Run ``run`` on the coordinator and wait; inline when it is not running."""
        if self._thread is None or not self._thread.is_alive():
            run()
            return
        command = self._post(run)
        command.done.wait()
        if command.error is not None:
            raise command.error

    def _run(self) -> None:
        last_settle = last_verify = last_poll = last_loop = time.monotonic()
        while True:
            # Cleared before the work, not after the wait: a post that comes while this
            # round works wakes the next wait at once instead of being lost.
            self._wake.clear()
            now = time.monotonic()
            if now - last_loop > self._verify_interval:
                last_verify = 0.0  # paused (SIGSTOP?): check ownership before anything else
            last_loop = now
            try:
                if now - last_verify >= self._verify_interval:
                    self._verify()
                    last_verify = now
                if now - last_poll >= self._retry_poll:
                    self._adopt_retries()
                    last_poll = now
                self._drain()
                if self._stop.is_set():
                    self._finish()
                    return
                self._dispatch()
                if now - last_settle >= self._settle_interval:
                    self._settle(list(self._books))
                    self._report_failures()
                    last_settle = now
            except CheckpointError as exc:
                self._store_outage.failed(exc, retry_in=1.0)
                self._stop.wait(1.0)
            except Exception:
                log.exception("dispatch round failed; trying again in 1s")
                self._stop.wait(1.0)
            self._wake.wait(self._settle_interval)

    def _drain(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _handle(self, item: _Command | _Result) -> None:
        if isinstance(item, _Result):
            self._record(item)
            return
        try:
            item.run()
        except BaseException as exc:
            item.error = exc
        finally:
            item.done.set()

    def _await_results(self, done: Callable[[], bool]) -> None:
        """Record answers until ``done()``; commands that come meanwhile run after."""
        deferred: list[_Command] = []
        while not done():
            try:
                item = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, _Result):
                self._record(item)
            else:
                deferred.append(item)
        for command in deferred:
            self._inbox.put(command)
        if deferred:
            self._wake.set()

    def _dispatch(self) -> int:
        """Hand out what is due, as far as the targets have room; return how many."""
        now = self._clock()
        room: dict[str, int] = {  # actions each target can take now
            name: (max(1, t.concurrency) - self._in_flight[name]) * max(1, t.batch_size)
            for name, t in self._targets.items()
        }
        taken: dict[str, list[tuple[PartitionBook, Entry]]] = {}
        for book in self._books.values():
            if book.closing:
                continue
            for entry in book.ready(now):
                name = entry.action.target
                target = self._targets.get(name)
                if target is None:
                    error = TargetError(f"no target named {name!r} is configured")
                    self._record(_Result(name, [(book, entry)], {entry.action.action_id: error}))
                    continue
                if room[name] <= 0:
                    book.not_now(entry)
                    if not any(room.values()):
                        break
                    continue
                lane = [entry]
                if target.ordered:
                    lane += book.followers(entry, room[name] - 1, now)
                room[name] -= len(lane)
                for e in lane:
                    book.sent(e)
                taken.setdefault(name, []).extend((book, e) for e in lane)
        for name, entries in taken.items():
            size = max(1, self._targets[name].batch_size)
            for i in range(0, len(entries), size):
                self._in_flight[name] += 1
                self._calls[name].put(_Call(name, entries[i : i + size]))
        return sum(len(entries) for entries in taken.values())

    def _deliver(self, target: Target, actions: list[Action]) -> dict[str, BaseException]:
        """Deliver, retrying in place (tenacity) the actions that failed transiently."""
        result0 = dict(target.deliver_many(actions))
        failures: dict[str, BaseException] = dict(result0)
        first: dict[str, BaseException] | None = result0
        pending = [a for a in actions if _transient(failures.get(a.action_id))]
        if not pending:  # the common case: no retry machinery at all
            return failures
        retrying = Retrying(
            stop=stop_after_attempt(self._policy.inline_attempts),
            wait=wait_exponential(multiplier=self._policy.inline_wait, max=2.0),
            retry=retry_if_exception(_transient),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    # The first attempt is the call above; tenacity waits before the next.
                    if first is not None:
                        result, first = first, None
                    else:
                        result = dict(target.deliver_many(pending))
                    for action in pending:
                        failures.pop(action.action_id, None)
                    failures.update(result)
                    retry = [a for a in pending if _transient(result.get(a.action_id))]
                    if retry:
                        pending = retry
                        raise result[retry[0].action_id]
        except RetryError:
            pass
        return failures

    def _record(self, result: _Result) -> None:
        if result.called:
            self._in_flight[result.target] -= 1
        now = self._clock()
        arrived = time.monotonic()
        broken: set[tuple[int, object]] = set()  # lanes with a failure earlier in this call
        for i, (book, entry) in enumerate(result.entries):
            if self._books.get(book.tp) is not book:
                continue  # the partition was dropped (fenced) meanwhile
            lane = (id(book), entry.lane)
            exc = result.failures.get(entry.action.action_id)
            if lane in broken:
                book.returned(entry)
            elif exc is None:
                book.delivered(entry)
                self._pending -= 1
                self.stats.delivered += 1
                self.stats.delivered_by_target[result.target] += 1
                self.stats.delivery.observe(arrived - entry.arrived)
            else:
                broken.add(lane)
                self._failed(book, entry, exc, now)
            if i == 0 and len(result.entries) > 1:
                crash_point("mid_dispatch")

    def _failed(self, book: PartitionBook, entry: Entry, exc: BaseException, now: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        attempts = entry.attempts + 1
        final = not _transient(exc) or attempts >= self._policy.max_attempts
        self._failures.setdefault(entry.action.target, []).append((error, final))
        if final:
            book.failed(entry, error, retry_at=None)
            self._pending -= 1
            self.stats.dead += 1
            self.stats.dead_by_target[entry.action.target] += 1
            log.error(
                "action %s (rule %s, key %s) is dead after %d attempt(s): %s",
                entry.action.action_id, entry.action.rule, entry.action.event_key, attempts, error,
            )  # fmt: skip
            return
        book.failed(entry, error, retry_at=now + self._policy.next_delay(attempts))
        self.stats.failed += 1
        self.stats.failed_by_target[entry.action.target] += 1

    def _report_failures(self) -> None:
        """One line per failing target and round, not one per action."""
        failures, self._failures = self._failures, {}
        for name, errors in failures.items():
            dead = sum(1 for _, final in errors if final)
            log.warning(
                "target %s: %d action(s) failed (%d to retry, %d dead); first error: %s",
                name, len(errors), len(errors) - dead, dead, errors[0][0],
            )  # fmt: skip

    def _settle(self, tps: Sequence[TopicPartition]) -> None:
        rounds: dict[TopicPartition, Settlement] = {}
        for tp in tps:
            settlement = self._books[tp].settlement()
            if settlement is not None:
                rounds[tp] = settlement
        if not rounds:
            return
        crash_point("after_dispatch")
        try:
            fenced = self._store.settle(rounds)
        except CheckpointError:
            self.stats.store_ok = False
            raise
        self.stats.store_ok = True
        self._store_outage.ok()
        for tp, settlement in rounds.items():
            if tp in fenced:
                self._drop(tp, "its settlement was refused")
            else:
                self._books[tp].settled(settlement)

    def _verify(self) -> None:
        if not self._books:
            return
        try:
            current = self._store.epochs(self._books)
        except CheckpointError:
            self.stats.store_ok = False
            raise
        self.stats.store_ok = True
        for tp, book in list(self._books.items()):
            if current.get(tp) != book.epoch:
                self._drop(tp, "its owner epoch moved on")

    def _drop(self, tp: TopicPartition, why: str) -> None:
        book = self._books.pop(tp, None)
        if book is not None:
            self._pending -= book.size
            self.stats.fenced += 1
            log.warning(
                "%s[%d]: another instance owns it now (%s); this one stops dispatching it",
                tp[0], tp[1], why,
            )  # fmt: skip

    def _adopt_retries(self) -> None:
        if not self._books:
            return
        rows = self._store.due_retries(self._books, self._clock())
        by_tp: dict[TopicPartition, list[Any]] = {}
        for row in rows:
            by_tp.setdefault(row.tp, []).append(row)
        for tp, found in by_tp.items():
            book = self._books.get(tp)
            if book is not None:
                self._pending += book.adopt(found)

    def _finish(self) -> None:
        deadline = time.monotonic() + self._release_timeout
        self._await_results(
            lambda: not any(self._in_flight.values()) or time.monotonic() > deadline
        )
        while True:  # commands still queued get an answer: the dispatcher has stopped
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Result):
                self._record(item)
            else:
                item.error = RuntimeError("the dispatcher has stopped")
                item.done.set()
        try:
            self._settle(list(self._books))
        except Exception:
            log.exception("the last settlement failed: the next start delivers those again")
