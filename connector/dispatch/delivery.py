"""Handing actions to targets: each target's worker threads, and retries in place.

A target gets ``concurrency`` long-lived threads fed by a queue (:class:`TargetWorkers`):
a call costs a put and a get, not a future and a thread-pool submission per action. Each
call is one ``deliver_many`` of up to ``batch_size`` actions; the actions that failed
transiently are tried again in place a few times (:func:`deliver`, tenacity) before the
call reports them. The answer goes back to the coordinator (:class:`Answer`).

An ``asynchronous`` target (the webhook's event loop) is called from the coordinator's
thread with :meth:`~connector.targets.base.Target.deliver_async` and answers from its
own; its threads only take the calls with transient failures, to try those again in
place as above. Its room is counted in actions (``concurrency * batch_size`` in flight),
not in calls: a call of a few actions does not hold a place worth ``batch_size``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from connector.common.retry import RetryPolicy
from connector.dispatch.lanes import Entry, PartitionBook, Run
from connector.targets.base import Target
from kec.action import Action
from kec.errors import TargetError

__all__ = ["Answer", "Call", "TargetWorkers", "deliver", "transient"]


def transient(exc: BaseException | None) -> bool:
    """Whether a delivery that failed with ``exc`` may succeed if tried again."""
    return isinstance(exc, TargetError) and exc.retriable


@dataclass(frozen=True, slots=True)
class Call:
    """Actions handed to one of a target's workers in one ``deliver_many``."""

    target: str
    entries: list[tuple[PartitionBook, Entry]]
    # An asynchronous target's first answer, already had: the worker tries again from it.
    answered: Mapping[str, BaseException] | None = None
    runs: list[tuple[PartitionBook, Run]] = field(default_factory=list)  # or whole runs

    def actions(self) -> list[Action]:
        if not self.runs:
            return [e.action for _, e in self.entries]
        actions: list[Action] = []
        for _, run in self.runs:
            actions.extend(run.actions)
        return actions


@dataclass(frozen=True)
class Answer:
    """What became of the actions of one call (or of actions no target could take)."""

    target: str
    entries: list[tuple[PartitionBook, Entry]]
    failures: Mapping[str, BaseException]  # action id -> why it failed; absent: delivered
    called: bool = False  # a call to the target (counted in flight) rather than a refusal
    # action id -> the attempts that failed and were tried again in place: (when, why)
    retried: Mapping[str, list[tuple[float, str]]] = field(default_factory=dict)
    runs: list[tuple[PartitionBook, Run]] = field(default_factory=list)  # whole runs called

    @property
    def size(self) -> int:
        """How many actions the answer is about."""
        return len(self.entries) + sum(len(run.actions) for _, run in self.runs)


def deliver(
    target: Target,
    actions: list[Action],
    policy: RetryPolicy,
    retried: dict[str, list[tuple[float, str]]] | None = None,
    answered: Mapping[str, BaseException] | None = None,
) -> dict[str, BaseException]:
    """Deliver, retrying in place (tenacity) the actions that failed transiently; each
    failure that was tried again is noted in ``retried`` (for lineage). ``answered``: the
    failures of a first attempt made already (an asynchronous target's)."""
    result0 = dict(target.deliver_many(actions) if answered is None else answered)
    failures: dict[str, BaseException] = dict(result0)
    first: dict[str, BaseException] | None = result0
    pending = [a for a in actions if transient(failures.get(a.action_id))]
    if not pending:  # the common case: no retry machinery at all
        return failures
    retrying = Retrying(
        stop=stop_after_attempt(policy.inline_attempts),
        wait=wait_exponential(multiplier=policy.inline_wait, max=2.0),
        retry=retry_if_exception(transient),
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
                retry = [a for a in pending if transient(result.get(a.action_id))]
                if retry:
                    pending = retry
                    if retried is not None and attempt.retry_state.attempt_number < (
                        policy.inline_attempts
                    ):
                        now = time.time()
                        for action in retry:
                            exc = result[action.action_id]
                            retried.setdefault(action.action_id, []).append(
                                (now, f"{type(exc).__name__}: {exc}")
                            )
                    raise result[retry[0].action_id]
    except RetryError:
        pass
    return failures


class TargetWorkers:
    """Each target's worker threads, the calls waiting for them, and the calls in flight.

    :meth:`submit` and :meth:`answered` are the coordinator's; each answer is passed to
    ``answer`` from the worker's thread.
    """

    def __init__(
        self,
        targets: Mapping[str, Target],
        policy: RetryPolicy,
        answer: Callable[[Answer], None],
    ) -> None:
        self._targets = targets
        self.policy = policy
        self._answer = answer
        self._calls: dict[str, queue.SimpleQueue[Call | None]] = {}
        self._threads: dict[str, list[threading.Thread]] = {}
        self.in_flight: dict[str, int] = {}  # target -> calls in flight
        self.actions_in_flight: dict[str, int] = {}  # target -> actions in those calls

    @property
    def busy(self) -> bool:
        """Whether a call is in flight."""
        return any(self.in_flight.values())

    def room(self) -> dict[str, int]:
        """How many actions each target can take now: free calls times ``batch_size``,
        and never more than its ``flow.max_in_flight`` less the actions in flight."""
        room: dict[str, int] = {}
        for name, t in self._targets.items():
            if t.asynchronous:
                free = max(1, t.concurrency) * max(1, t.batch_size) - self.actions_in_flight[name]
            else:
                free = (max(1, t.concurrency) - self.in_flight[name]) * max(1, t.batch_size)
            cap = t.flow.max_in_flight
            if cap is not None:
                free = min(free, cap - self.actions_in_flight[name])
            room[name] = max(0, free)
        return room

    def open(self) -> None:
        """``concurrency`` threads per target not open yet."""
        for name, target in self._targets.items():
            if name in self._calls:
                continue
            calls: queue.SimpleQueue[Call | None] = queue.SimpleQueue()
            self._calls[name] = calls
            self.in_flight.setdefault(name, 0)  # a replaced target's calls may be in flight
            self.actions_in_flight.setdefault(name, 0)
            threads = self._threads[name] = []
            for i in range(max(1, target.concurrency)):
                worker = threading.Thread(
                    target=self._work, args=(target, calls), name=f"kec-{name}-{i}", daemon=True
                )
                worker.start()
                threads.append(worker)

    def replace(self, targets: Mapping[str, Target]) -> list[tuple[Target, list[threading.Thread]]]:
        """Deliver to ``targets`` from now on (a config reload). The workers of a target
        removed or replaced by another object finish the calls handed to them, then end;
        returned with it, to be closed once they have (the caller joins them)."""
        retired: list[tuple[Target, list[threading.Thread]]] = []
        for name, old in self._targets.items():
            if targets.get(name) is old:
                continue
            calls = self._calls.pop(name, None)
            threads = self._threads.pop(name, [])
            if calls is not None:
                for _ in threads:
                    calls.put(None)  # after the calls already queued: those still go out
            retired.append((old, threads))
        self._targets = targets
        self.open()
        return retired

    def close(self) -> None:
        for name, calls in self._calls.items():
            # Calls not yet taken are dropped, unsettled: their actions are delivered
            # again (same ids) by whoever owns the partition next.
            while not calls.empty():
                try:
                    calls.get_nowait()
                except queue.Empty:
                    break
            for _ in self._threads.get(name, ()):
                calls.put(None)  # each worker takes one and ends after its call in progress
        self._calls.clear()
        self._threads.clear()

    def submit_runs(self, name: str, runs: list[tuple[PartitionBook, Run]]) -> None:
        """Hand ``runs`` to target ``name`` (which takes runs: ordered, synchronous), as
        many a call as ``batch_size`` allows (each fits one: :func:`~connector.dispatch.
        lanes.runnable`)."""
        size = max(1, self._targets[name].batch_size)
        call: list[tuple[PartitionBook, Run]] = []
        count = 0
        for item in runs:
            n = len(item[1].actions)
            if call and count + n > size:
                self._put_runs(name, call, count)
                call, count = [], 0
            call.append(item)
            count += n
        if call:
            self._put_runs(name, call, count)

    def _put_runs(self, name: str, runs: list[tuple[PartitionBook, Run]], count: int) -> None:
        self.in_flight[name] += 1
        self.actions_in_flight[name] += count
        self._calls[name].put(Call(name, [], runs=runs))

    def submit(self, name: str, entries: list[tuple[PartitionBook, Entry]]) -> None:
        """Hand ``entries`` to target ``name``, ``batch_size`` per call: to its workers,
        or straight to an asynchronous target."""
        target = self._targets[name]
        size = max(1, target.batch_size)
        for i in range(0, len(entries), size):
            chunk = entries[i : i + size]
            self.in_flight[name] += 1
            self.actions_in_flight[name] += len(chunk)
            if target.asynchronous:
                self._start(target, Call(name, chunk))
            else:
                self._calls[name].put(Call(name, chunk))

    def _start(self, target: Target, call: Call) -> None:
        """An asynchronous target's call: answered from its thread, or, when some of it
        failed transiently, by a worker that tries those again in place first."""
        calls = self._calls[call.target]

        def done(failures: dict[str, BaseException]) -> None:
            # A retired target's workers are gone: its answer goes back as it is.
            if self._calls.get(call.target) is calls and any(map(transient, failures.values())):
                calls.put(Call(call.target, call.entries, failures))
                return
            self._answer(Answer(call.target, call.entries, failures, called=True))

        try:
            target.deliver_async([e.action for _, e in call.entries], done)
        except BaseException as exc:  # nothing was sent
            failures = {e.action.action_id: exc for _, e in call.entries}
            self._answer(Answer(call.target, call.entries, failures, called=True))

    def answered(self, answer: Answer) -> None:
        """``answer`` reached the coordinator: its call is no longer in flight."""
        if answer.called:
            self.in_flight[answer.target] -= 1
            self.actions_in_flight[answer.target] -= answer.size

    def _work(self, target: Target, calls: queue.SimpleQueue[Call | None]) -> None:
        while (call := calls.get()) is not None:
            retried: dict[str, list[tuple[float, str]]] = {}
            actions = call.actions()
            try:
                failures = deliver(target, actions, self.policy, retried, call.answered)
            except BaseException as exc:  # deliver_many itself broke
                failures = {a.action_id: exc for a in actions}
            self._answer(Answer(call.target, call.entries, failures, True, retried, call.runs))
