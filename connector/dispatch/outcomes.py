"""What became of each delivery: recorded in the books, counted, and logged.

An answer's actions are delivered; or failed, with a retry at
``policy.next_delay(attempts)``; or dead (a ``dead`` row, the dead-letter table) after
the last attempt or a refusal for good. A failure holds back the rest of its lane in the
same call, which goes back to wait. Failures are logged once per target and round.

A call of whole runs is settled whole when every action was delivered at the first try;
otherwise its runs become entries (:meth:`~connector.dispatch.lanes.PartitionBook.explode`)
and each action is recorded as above.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from connector.common.retry import RetryPolicy
from connector.dispatch.books import OwnedBooks
from connector.dispatch.delivery import Answer, transient
from connector.dispatch.lanes import Entry, PartitionBook
from connector.metrics.core import LATENCY_BUCKETS, Histogram
from kec.faults import crash_point

__all__ = ["DispatchStats", "Outcomes"]

log = logging.getLogger(__name__)


@dataclass
class DispatchStats:
    delivered: int = 0
    failed: int = 0  # failed attempts (each followed by a retry)
    dead: int = 0
    delivered_by_target: Counter[str] = field(default_factory=Counter)
    failed_by_target: Counter[str] = field(default_factory=Counter)
    dead_by_target: Counter[str] = field(default_factory=Counter)
    # From an action reaching the dispatcher (checkpointed, or loaded) to its delivery.
    delivery: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    store_ok: bool = True  # the last settlement or ownership check went through


class Outcomes:
    """Records answers in the books they came from (the coordinator's thread only)."""

    def __init__(
        self,
        books: OwnedBooks,
        policy: RetryPolicy,
        stats: DispatchStats,
        clock: Callable[[], float],
    ) -> None:
        self._books = books
        self.policy = policy
        self._stats = stats
        self._clock = clock
        self._failures: dict[str, list[tuple[str, bool]]] = {}  # target -> (error, final)

    def record(self, answer: Answer) -> None:
        # Counted per answer: the entries of one batch arrived together, so the latency
        # histogram gets one observation per distinct arrival, weighted.
        delivered: dict[float, int] = {}
        if answer.runs:
            if answer.failures or answer.retried:
                answer = self._exploded(answer)
                self._each(answer, delivered)
            else:
                self._runs_delivered(answer, delivered)
        elif answer.failures or answer.retried:
            self._each(answer, delivered)
        else:
            self._all_delivered(answer, delivered)
        if delivered:
            count = sum(delivered.values())
            self._books.pending -= count
            self._stats.delivered += count
            self._stats.delivered_by_target[answer.target] += count
            answered = time.monotonic()
            for arrived, n in delivered.items():
                self._stats.delivery.observe(answered - arrived, n)

    def _runs_delivered(self, answer: Answer, delivered: dict[float, int]) -> None:
        """Every action of the answer's runs delivered at the first try."""
        holds = self._books.holds
        for i, (book, run) in enumerate(answer.runs):
            if holds(book):  # else the partition was dropped (fenced) meanwhile
                book.run_delivered(run)
                delivered[run.arrived] = delivered.get(run.arrived, 0) + len(run.actions)
            if i == 0 and answer.size > 1:
                crash_point("mid_dispatch")

    def _exploded(self, answer: Answer) -> Answer:
        """``answer`` about the entries its runs became (their books work by lanes now)."""
        entries: list[tuple[PartitionBook, Entry]] = []
        holds = self._books.holds
        for book, run in answer.runs:
            if holds(book):
                entries.extend((book, e) for e in book.explode(run))
        return replace(answer, entries=entries, runs=[])

    def _all_delivered(self, answer: Answer, delivered: dict[float, int]) -> None:
        """:meth:`_each` for the common answer: every action delivered at first try."""
        holds = self._books.holds
        last: PartitionBook | None = None  # a call's entries come in runs of one book
        held = False
        first = True
        for book, entry in answer.entries:
            if book is not last:
                last, held = book, holds(book)
            if held:  # else the partition was dropped (fenced) meanwhile
                if entry.attempts:
                    book.tried(entry, "delivered", time.time())
                book.delivered(entry)
                delivered[entry.arrived] = delivered.get(entry.arrived, 0) + 1
            if first:
                first = False
                if len(answer.entries) > 1:
                    crash_point("mid_dispatch")

    def _each(self, answer: Answer, delivered: dict[float, int]) -> None:
        """Each action of ``answer`` recorded: delivered, failed (retried or dead), or
        returned to wait behind a failure earlier in its lane."""
        now = self._clock()
        broken: set[tuple[int, object]] = set()  # lanes with a failure earlier in this call
        holds = self._books.holds
        failures = answer.failures
        retried = answer.retried
        last: PartitionBook | None = None
        held = False
        for i, (book, entry) in enumerate(answer.entries):
            if book is not last:
                last, held = book, holds(book)
            if not held:
                continue  # the partition was dropped (fenced) meanwhile
            exc = failures.get(entry.action.action_id) if failures else None
            again = retried.get(entry.action.action_id) if retried else None
            if again:
                for at, error in again:
                    book.tried(entry, "failed", at, error)
            if broken and (id(book), entry.lane) in broken:
                book.returned(entry)
            elif exc is None:
                if again or entry.attempts:
                    book.tried(entry, "delivered", time.time())
                book.delivered(entry)
                delivered[entry.arrived] = delivered.get(entry.arrived, 0) + 1
            else:
                broken.add((id(book), entry.lane))
                self._failed(book, entry, exc, now)
            if i == 0 and len(answer.entries) > 1:
                crash_point("mid_dispatch")

    def _failed(self, book: PartitionBook, entry: Entry, exc: BaseException, now: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        attempts = entry.attempts + 1
        final = not transient(exc) or attempts >= self.policy.max_attempts
        book.tried(entry, "dead" if final else "failed", time.time(), error)
        self._failures.setdefault(entry.action.target, []).append((error, final))
        if final:
            book.failed(entry, error, retry_at=None)
            self._books.pending -= 1
            self._stats.dead += 1
            self._stats.dead_by_target[entry.action.target] += 1
            log.error(
                "action %s (rule %s, key %s) is dead after %d attempt(s): %s",
                entry.action.action_id, entry.action.rule, entry.action.event_key, attempts, error,
            )  # fmt: skip
            return
        book.failed(entry, error, retry_at=now + self.policy.next_delay(attempts))
        self._stats.failed += 1
        self._stats.failed_by_target[entry.action.target] += 1

    def report(self) -> None:
        """One line per failing target and round, not one per action."""
        failures, self._failures = self._failures, {}
        for name, errors in failures.items():
            dead = sum(1 for _, final in errors if final)
            log.warning(
                "target %s: %d action(s) failed (%d to retry, %d dead); first error: %s",
                name, len(errors), len(errors) - dead, dead, errors[0][0],
            )  # fmt: skip
