"""Step 4 of the protocol: deliver the outbox's pending actions to their targets.

A dispatch round:

1. read the due pending actions in checkpoint order (``seq``);
2. group consecutive actions by target and deliver each group with its idempotency keys;
   a transient failure is retried in place a few times with exponential backoff
   (tenacity) before the round gives up on that action;
3. schedule a durable retry (``next_attempt_at``) for each failed action, or move it to
   the dead-letter table after its last attempt; then mark the round's delivered actions
   done, in one store transaction.

Crash anywhere in 2–3 and the actions are still pending: they are delivered again with the
same ids, which the target deduplicates (docs/architecture.md: rows "during dispatch" and "after
dispatch, before it is marked done").

Per-key order: once an action of a key fails, later actions of the same key wait until it
has been delivered or declared dead (in this process; see :class:`Dispatcher`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from checkpoint.base import CheckpointStore, OutboxEntry
from connector.targets.base import Target
from kec.action import Action
from kec.errors import TargetError
from kec.faults import crash_point

log = logging.getLogger(__name__)


def _transient(exc: BaseException | None) -> bool:
    return isinstance(exc, TargetError) and exc.retriable


class OutboxGauge:
    """How many actions are pending, kept in memory so backpressure costs no query."""

    def __init__(self, initial: int = 0) -> None:
        self._pending = initial
        self._version = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    @property
    def pending(self) -> int:
        return self._pending

    def add(self, n: int) -> None:
        with self._lock:
            self._pending += n
            self._version += 1
            self._changed.notify_all()

    def remove(self, n: int) -> None:
        with self._lock:
            self._pending = max(0, self._pending - n)
            self._version += 1
            self._changed.notify_all()

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Wait until fewer than ``limit`` actions are pending; False on timeout."""
        with self._lock:
            return self._changed.wait_for(lambda: self._pending < limit, timeout)

    def wait_for_change(self, timeout: float) -> None:
        with self._lock:
            seen = self._version
            self._changed.wait_for(lambda: self._version != seen, timeout)


@dataclass(frozen=True)
class RetryPolicy:
    """In-round retries (short, tenacity) and durable retries across rounds."""

    max_attempts: int = 8  # durable attempts before the dead-letter table
    inline_attempts: int = 3  # tries within one round for a transient error
    inline_wait: float = 0.05  # first in-round backoff, doubling
    base_delay: float = 1.0  # first durable retry delay, doubling, with jitter
    max_delay: float = 300.0

    def next_delay(self, attempts: int) -> float:
        delay: float = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.8, 1.2)


class Dispatcher:
    """Delivers pending actions; run it in its own thread with :meth:`run`.

    Collaborators are passed in; nothing happens until :meth:`run` or :meth:`run_once`.
    The blocked-key set that keeps per-key order across failures lives in memory: after a
    restart, an action whose retry is scheduled later may be overtaken by a later action
    of the same key that is already due.
    """

    def __init__(
        self,
        store: CheckpointStore,
        targets: Mapping[str, Target],
        gauge: OutboxGauge,
        *,
        policy: RetryPolicy | None = None,
        round_size: int = 2000,
        chunk_size: int = 256,
        idle_wait: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._targets = targets
        self._gauge = gauge
        self._policy = policy or RetryPolicy()
        self._round_size = round_size
        self._chunk_size = chunk_size
        self._idle_wait = idle_wait
        self._clock = clock
        self._blocked: dict[tuple[str, str], int] = {}  # (namespace, key) -> seq that failed
        self.delivered = 0
        self.failed = 0
        self.dead = 0

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; finishes the round in progress before returning."""
        while not stop.is_set():
            try:
                if self.run_once() == 0:
                    # Nothing settled: wake when the pipeline adds actions, or to look for
                    # retries that have come due.
                    self._gauge.wait_for_change(self._idle_wait)
            except Exception:
                log.exception("dispatch round failed; retrying in 1s")
                stop.wait(1.0)

    def run_once(self) -> int:
        """One dispatch round; returns how many actions it settled (done or dead)."""
        due = self._store.due_actions(self._clock(), self._round_size)
        if not due:
            return 0
        delivered: list[OutboxEntry] = []
        settled = 0
        chunks = self._chunks([e for e in due if self._ready(e)])
        for i, (target_name, chunk) in enumerate(chunks):
            # A failure earlier in this round blocks the later actions of its key.
            chunk = [e for e in chunk if self._ready(e)]
            failures = self._deliver_chunk(target_name, [e.action for e in chunk])
            for entry in chunk:
                exc = failures.get(entry.action.action_id)
                if exc is None:
                    delivered.append(entry)
                else:
                    settled += self._record_failure(entry, exc)
            if i < len(chunks) - 1:
                crash_point("mid_dispatch")
        if delivered:
            crash_point("after_dispatch")
            self._store.mark_done([e.action.action_id for e in delivered])
            self._gauge.remove(len(delivered))
            self.delivered += len(delivered)
            for entry in delivered:
                key = (entry.action.namespace, entry.action.event_key)
                if self._blocked.get(key) == entry.seq:
                    del self._blocked[key]
        return settled + len(delivered)

    def _ready(self, entry: OutboxEntry) -> bool:
        key = (entry.action.namespace, entry.action.event_key)
        blocker = self._blocked.get(key)
        return blocker is None or blocker == entry.seq

    def _chunks(self, entries: Sequence[OutboxEntry]) -> list[tuple[str, list[OutboxEntry]]]:
        chunks: list[tuple[str, list[OutboxEntry]]] = []
        for entry in entries:
            name = entry.action.target
            if chunks and chunks[-1][0] == name and len(chunks[-1][1]) < self._chunk_size:
                chunks[-1][1].append(entry)
            else:
                chunks.append((name, [entry]))
        return chunks

    def _deliver_chunk(self, target_name: str, actions: list[Action]) -> dict[str, Exception]:
        if not actions:
            return {}
        target = self._targets.get(target_name)
        if target is None:
            return {
                a.action_id: TargetError(f"no target named {target_name!r} is configured")
                for a in actions
            }
        return self._deliver_with_retries(target, actions)

    def _deliver_with_retries(self, target: Target, actions: list[Action]) -> dict[str, Exception]:
        """Deliver, retrying in place the actions that failed transiently.

        Final failures (rejections, unexpected errors) are kept as they are; only the
        transient ones go round again, up to ``inline_attempts`` times in all.
        """
        pending = actions
        failures: dict[str, Exception] = {}
        retrying = Retrying(
            stop=stop_after_attempt(self._policy.inline_attempts),
            wait=wait_exponential(multiplier=self._policy.inline_wait, max=2.0),
            retry=retry_if_exception(_transient),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    result = target.deliver_many(pending)
                    for action_id in [a.action_id for a in pending]:
                        failures.pop(action_id, None)
                    failures.update(result)
                    retry = [a for a in pending if _transient(result.get(a.action_id))]
                    if retry:
                        pending = retry
                        raise result[retry[0].action_id]
        except RetryError:
            pass
        return failures

    def _record_failure(self, entry: OutboxEntry, exc: Exception) -> int:
        key = (entry.action.namespace, entry.action.event_key)
        attempts = entry.attempts + 1
        error = f"{type(exc).__name__}: {exc}"
        final = not _transient(exc)
        if final or attempts >= self._policy.max_attempts:
            self._store.mark_dead(entry.action.action_id, error)
            self._gauge.remove(1)
            self._blocked.pop(key, None)
            self.dead += 1
            log.error(
                "action %s (rule %s, key %s) is dead after %d attempt(s): %s",
                entry.action.action_id,
                entry.action.rule,
                entry.action.event_key,
                attempts,
                error,
            )
            return 1
        delay = self._policy.next_delay(attempts)
        self._store.mark_retry(entry.action.action_id, self._clock() + delay, error)
        self._blocked[key] = entry.seq
        self.failed += 1
        log.warning(
            "action %s to %s failed (attempt %d/%d), retrying in %.1fs: %s",
            entry.action.action_id,
            entry.action.target,
            attempts,
            self._policy.max_attempts,
            delay,
            error,
        )
        return 0
