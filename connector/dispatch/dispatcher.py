"""The dispatcher: one coordinator thread runs the rounds of step 4 for the owned
partitions; the pipeline's threads hand it work (the package docstring says which
module does what).

A round:

1. take what is due: each partition's next run, whole (a batch for a target that keeps
   the order of a call: :func:`~connector.dispatch.schedule.take_runs`), then the lane
   heads (:func:`~connector.dispatch.schedule.take_due`): actions of different (target,
   key) lanes go out concurrently, one lane's in order;
2. hand them to their target's workers
   (:class:`~connector.dispatch.delivery.TargetWorkers`): up to ``target.concurrency``
   calls of ``deliver_many`` at once, ``target.batch_size`` actions each, never more
   than ``max_in_flight`` actions in flight nor faster than its ``rate``
   (:mod:`~connector.dispatch.flow`; held back, they wait in their lanes). A transient
   failure is retried in place a few times (tenacity) before the call reports it;
3. record each answer in the book (:class:`~connector.dispatch.outcomes.Outcomes`):
   delivered; or failed, with a retry at ``next_delay(attempts)``, or dead after the
   last attempt or a refusal for good;
4. every ``settle_interval`` (and at revoke and stop), write each partition's settlement
   (watermark, parked rows) in one store transaction, fenced by the partition's epoch
   (:class:`~connector.dispatch.settlement.Settler`).

Crash anywhere in 2–4 and the actions not settled are delivered again by the next owner
with the same ids, which the target deduplicates (crash points ``mid_dispatch``: some
answers recorded, others not; ``after_dispatch``: delivered, not yet settled).

Ownership: a partition is dispatched only while this instance owns it; which partitions
that is, and at which epoch, is the :class:`~connector.common.ownership.Ownership` registry it
shares with the pipeline (its books hold the delivery state of each). On revoke,
:meth:`Dispatcher.release` waits for its deliveries in flight, writes its last
settlement and forgets it. A settlement refused for a stale epoch drops the partition at
once. Every ``verify_interval``, and after any pause of the coordinator longer than that
(SIGSTOP, a long GC), the owner epochs are read back from the store before anything else
is delivered, so an instance that was paused past its session timeout stops at once: a
partition whose epoch there is not the registry's is dropped. Each drop marks the
partition fenced in the registry, and the pipeline stops reading it at its next batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from checkpoint.base import Claim, DispatchStore
from connector.common.outage import Outage, cause_of
from connector.common.ownership import Ownership
from connector.common.retry import RetryPolicy
from connector.dispatch.books import OwnedBooks
from connector.dispatch.delivery import Answer, TargetWorkers
from connector.dispatch.flow import FlowControl
from connector.dispatch.lanes import Entry, PartitionBook, runnable
from connector.dispatch.outcomes import DispatchStats, Outcomes
from connector.dispatch.schedule import take_due, take_runs
from connector.dispatch.settlement import Settler
from connector.targets.base import Target
from kec.action import Action
from kec.errors import CheckpointError, TargetError
from kec.event import TP

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)

ROUND_RETRY = 1.0  # seconds the store is left alone after a round it failed


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
        store: DispatchStore,
        targets: Mapping[str, Target],
        *,
        policy: RetryPolicy | None = None,
        settle_interval: float = 0.05,
        verify_interval: float = 2.0,
        retry_poll: float = 1.0,
        release_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        ownership: Ownership | None = None,
    ) -> None:
        """``ownership``: the registry shared with the pipeline (a fresh one if not
        given: then :meth:`adopt` records the claims it is given)."""
        policy = policy or RetryPolicy()
        self._settle_interval = settle_interval
        self._verify_interval = verify_interval
        self._retry_poll = retry_poll
        self._release_timeout = release_timeout
        self._clock = clock
        self._targets = targets
        self._paused: frozenset[str] = frozenset()  # targets whose actions wait
        self._inbox: queue.SimpleQueue[_Command | Answer] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = DispatchStats()
        self.ownership = ownership if ownership is not None else Ownership()
        self._books = OwnedBooks(self.ownership)
        self._workers = TargetWorkers(targets, policy, self._answered)
        self._flow = FlowControl()
        self._turn = 0  # where the last round started among the books
        self._outcomes = Outcomes(self._books, policy, self.stats, clock)
        self._store_outage = Outage("checkpoint store (dispatcher)", log)
        self._settler = Settler(store, self._books, self.ownership, self.stats, self._store_outage)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._workers.open()
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
        self._workers.close()

    def run_round(self) -> int:
        """One whole round in the calling thread, without the coordinator (tests, tools):
        hand out what is due, wait for every answer, settle. Returns how many actions
        were settled (delivered or dead)."""
        if self._thread is not None:
            raise RuntimeError("run_round() is for a dispatcher that was not started")
        self._workers.open()
        before = self.stats.delivered + self.stats.dead
        self._drain()
        while self._dispatch():
            self._await_results(lambda: not self._workers.busy)
        self._settler.settle(list(self._books))
        self._outcomes.report()
        return self.stats.delivered + self.stats.dead - before

    @property
    def pending(self) -> int:
        """Actions of owned partitions not settled yet (for backpressure and metrics)."""
        return self._books.pending

    def in_flight(self) -> dict[str, int]:
        """Per target, the actions handed to it and not answered yet (metrics)."""
        return dict(self._workers.actions_in_flight)

    def throttled_seconds(self) -> dict[str, float]:
        """Per target, the seconds it had actions due that it could not take yet (its
        ``max_in_flight``, ``concurrency`` or ``rate``; metrics)."""
        return dict(self._flow.throttled_seconds)

    # -- from the pipeline ---------------------------------------------------------------

    def adopt(self, claims: Mapping[TP, Claim]) -> None:
        """Partitions just claimed: load what the store still holds for each. The
        pipeline records its claims in the shared registry first; claims the registry
        does not hold at their epoch (a dispatcher run without a pipeline: tools, tests)
        are recorded as owned here."""
        unknown = {tp: c.epoch for tp, c in claims.items() if self.ownership.epoch(tp) != c.epoch}
        if unknown:
            self.ownership.claimed(unknown)
        books = [
            PartitionBook.load(tp, c.epoch, self._settler.load(tp)) for tp, c in claims.items()
        ]

        def add() -> None:
            for book in books:
                self._books.put(book)
            loaded = sum(b.size for b in books)
            if loaded:
                log.info("dispatching %d actions left pending by the previous owner(s)", loaded)

        self._call(add)

    def queue(self, tp: TP, first_aseq: int, actions: Sequence[Action]) -> None:
        """A batch's actions for ``tp``, numbered from ``first_aseq``, just checkpointed."""
        if not actions:
            return

        def add() -> None:
            book = self._books.get(tp)
            if book is None:  # released meanwhile: the next owner reads them from the store
                return
            book.queue(first_aseq, actions, self._run_size)
            self._books.pending += len(actions)

        self._post(add)

    def _run_size(self, name: str) -> int:
        target = self._targets.get(name)
        return 0 if target is None else runnable(target)

    def catch_up(self, tp: TP) -> None:
        """Load the actions of ``tp`` that the store holds and this dispatcher never got:
        the pipeline's batch committed though the pipeline saw the commit fail."""
        pending = self._settler.load(tp)

        def add() -> None:
            book = self._books.get(tp)
            if book is None:
                return
            found = book.catch_up(pending)
            self._books.pending += found
            if found:
                log.info(
                    "%s[%d]: %d actions of a batch whose commit was not acknowledged, "
                    "loaded from the store",
                    tp[0], tp[1], found,
                )  # fmt: skip

        self._call(add)

    def release(self, partitions: Iterable[TP]) -> None:
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
                self._settler.settle([tp for tp in tps if tp in self._books])
            except CheckpointError as exc:
                # The next owner delivers again (same ids) what was not settled.
                log.warning(
                    "the last settlement of %d released partition(s) failed: %s",
                    len(tps), cause_of(exc),
                )  # fmt: skip
            finally:
                for tp in tps:
                    self._books.forget(tp)

        self._call(release)

    # -- from a config reload or an operator ----------------------------------------------

    @property
    def paused_targets(self) -> frozenset[str]:
        return self._paused

    def replace_targets(
        self, targets: Mapping[str, Target], policy: RetryPolicy | None = None
    ) -> list[tuple[Target, list[threading.Thread]]]:
        """Deliver to ``targets`` (opened) from now on, with ``policy`` if given. Actions
        already queued keep their target's name: a changed target's are delivered by its
        new settings, a removed target's fail as for any target not configured (retried,
        then dead). Returns the targets that went out of use, each with the worker threads
        still finishing its calls: close each once they have ended."""
        retired: list[tuple[Target, list[threading.Thread]]] = []

        def swap() -> None:
            if policy is not None:
                self._workers.policy = policy
                self._outcomes.policy = policy
            retired.extend(self._workers.replace(targets))
            self._flow.forget(set(self._targets) - set(targets))
            self._targets = targets
            self._paused = self._paused & set(targets)

        self._call(swap)
        return retired

    def set_paused_targets(self, names: Collection[str]) -> None:
        """Hold back the actions of the targets ``names`` (they wait in their lanes, no
        attempt counted, and count towards backpressure); the others are delivered,
        those resumed in their order."""
        wanted = frozenset(names)

        def change() -> None:
            resumed = self._paused - wanted
            self._paused = wanted
            for name in resumed:
                for book in self._books.books():
                    book.wake(name)

        self._call(change)
        self._wake.set()

    # -- the coordinator -----------------------------------------------------------------

    def _answered(self, answer: Answer) -> None:
        """From a worker thread: an answer for the coordinator."""
        self._inbox.put(answer)
        self._wake.set()

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
        retry_at = 0.0  # after a failed round: the store is not asked again before this
        while True:
            # Cleared before the work, not after the wait: a post that comes while this
            # round works wakes the next wait at once instead of being lost.
            self._wake.clear()
            now = time.monotonic()
            if now - last_loop > self._verify_interval:
                last_verify = 0.0  # paused (SIGSTOP?): check ownership before anything else
            last_loop = now
            failed = now < retry_at  # the last round failed under a second ago
            if not failed:
                try:
                    if now - last_verify >= self._verify_interval:
                        self._settler.verify()
                        last_verify = now
                    if now - last_poll >= self._retry_poll:
                        self._settler.adopt_retries(self._clock())
                        last_poll = now
                except Exception as exc:
                    failed, retry_at = True, self._round_failed(exc, now)
            # Commands run whether or not the store answers: a revoke waits on its release
            # (which gives up on a settlement the store refuses), and a stop must stop.
            self._drain()
            if self._stop.is_set():
                self._finish()
                return
            if not failed:
                try:
                    self._dispatch()
                    if now - last_settle >= self._settle_interval:
                        self._settler.settle(list(self._books))
                        self._outcomes.report()
                        last_settle = now
                except Exception as exc:
                    failed, retry_at = True, self._round_failed(exc, now)
            if failed:
                # Until retry_at only commands run; one posted meanwhile wakes this wait.
                self._wake.wait(max(0.0, retry_at - time.monotonic()))
                continue
            # A rate-limited target's next token may come sooner than the next round.
            wake_in = self._flow.wake_in()
            self._wake.wait(
                self._settle_interval if wake_in is None else min(wake_in, self._settle_interval)
            )

    def _round_failed(self, exc: Exception, now: float) -> float:
        """Say why a round failed (a store outage once, anything else with its traceback)
        and return when the store may be asked again."""
        if isinstance(exc, CheckpointError):
            self._store_outage.failed(exc, retry_in=ROUND_RETRY)
        else:
            log.exception("dispatch round failed; trying again in %gs", ROUND_RETRY)
        return now + ROUND_RETRY

    def _drain(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _handle(self, item: _Command | Answer) -> None:
        if isinstance(item, Answer):
            self._record(item)
            return
        try:
            item.run()
        except BaseException as exc:
            item.error = exc
        finally:
            item.done.set()

    def _record(self, answer: Answer) -> None:
        self._workers.answered(answer)
        self._outcomes.record(answer)

    def _refuse(self, book: PartitionBook, entry: Entry, error: TargetError) -> None:
        self._record(Answer(entry.action.target, [(book, entry)], {entry.action.action_id: error}))

    def _await_results(self, done: Callable[[], bool]) -> None:
        """Record answers until ``done()``; commands that come meanwhile run after."""
        deferred: list[_Command] = []
        while not done():
            try:
                item = self._inbox.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, Answer):
                self._record(item)
            else:
                deferred.append(item)
        for command in deferred:
            self._inbox.put(command)
        if deferred:
            self._wake.set()

    def _dispatch(self) -> int:
        """Hand out what is due, as far as the targets have room; return how many."""
        room = self._workers.room()
        self._flow.begin(self._targets, room, time.monotonic())
        books = self._books.books()
        if len(books) > 1:  # each round starts at another book: none waits for the others'
            self._turn = (self._turn + 1) % len(books)
            books = books[self._turn :] + books[: self._turn]
        runs = take_runs(books, self._targets, room, self._paused)
        for name, taken_runs in runs.items():
            self._workers.submit_runs(name, taken_runs)
        taken = take_due(
            books, self._targets, room, self._clock(), self._refuse, self._paused, self._flow
        )
        for name, entries in taken.items():
            self._workers.submit(name, entries)
        return sum(len(r.actions) for out in runs.values() for _, r in out) + sum(
            len(entries) for entries in taken.values()
        )

    def _finish(self) -> None:
        deadline = time.monotonic() + self._release_timeout
        self._await_results(lambda: not self._workers.busy or time.monotonic() > deadline)
        while True:  # commands still queued get an answer: the dispatcher has stopped
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Answer):
                self._record(item)
            else:
                item.error = RuntimeError("the dispatcher has stopped")
                item.done.set()
        try:
            self._settler.settle(list(self._books))
        except Exception:
            log.exception("the last settlement failed: the next start delivers those again")
