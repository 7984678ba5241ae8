"""Asynchronous targets (the webhook's loop) in the dispatcher's workers: room counted in
actions rather than calls, answers from the target's own thread, and transient failures
tried again in place by a worker, with real threads and no broker."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from connector.common.retry import RetryPolicy
from connector.dispatch.delivery import Answer, TargetWorkers
from connector.dispatch.lanes import Entry, PartitionBook
from connector.dispatch.schedule import take_due
from connector.targets.base import Target
from kec.action import Action, ActionKind
from kec.errors import TargetError, TargetRejected

Done = Callable[[dict[str, BaseException]], None]


class _Async(Target):
    """Answers each call from a thread of its own, after a while; ``fail`` says what a
    first attempt of an action answers (retries go through ``deliver_many``)."""

    asynchronous = True

    def __init__(self, concurrency: int, batch_size: int) -> None:
        self.name = "hook"
        self.concurrency, self.batch_size = concurrency, batch_size
        self.fail: dict[str, BaseException] = {}
        self.broken: BaseException | None = None
        self.lock = threading.Lock()
        self.now = self.peak = 0
        self.sent: list[str] = []  # every request, retries too
        self.again: list[str] = []  # the ones deliver_many (a worker) sent
        self.threads: set[str] = set()  # where done() was called from
        self._calls: queue.SimpleQueue[tuple[list[Action], Done] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._answer, daemon=True)

    def open(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join(10)

    def deliver(self, action: Action) -> None:
        raise AssertionError("deliver_async or deliver_many is called")

    def deliver_async(self, actions: Sequence[Action], done: Done) -> None:
        if self.broken is not None:
            raise self.broken
        with self.lock:
            self.now += len(actions)
            self.peak = max(self.peak, self.now)
        self._calls.put((list(actions), done))

    def deliver_many(self, actions: Sequence[Action]) -> dict[str, BaseException]:
        with self.lock:
            self.again.extend(a.action_id for a in actions)
            self.sent.extend(a.action_id for a in actions)
        return {}

    def _answer(self) -> None:
        while (item := self._calls.get()) is not None:
            actions, done = item
            time.sleep(0.002)  # the slow receiver itself, not synchronisation
            with self.lock:
                self.now -= len(actions)
                self.sent.extend(a.action_id for a in actions)
                self.threads.add(threading.current_thread().name)
            done({a.action_id: self.fail[a.action_id] for a in actions if a.action_id in self.fail})


def _action(n: int) -> Action:
    return Action(
        rule="r", kind=ActionKind.NOTIFY, target="hook", namespace="shop",
        event_ids=(f"t/0/{n}",), event_key=f"k{n}", action_id=f"a{n:05d}",
    )  # fmt: skip


def _refuse(book: PartitionBook, entry: Entry, error: TargetError) -> None:
    raise AssertionError(error)


class _Rig:
    """A target, its workers and a book of ``count`` actions of different keys."""

    def __init__(self, target: _Async, count: int) -> None:
        self.target = target
        self.answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()
        self.workers = TargetWorkers(
            {"hook": target}, RetryPolicy(inline_wait=0.001), self.answers.put
        )
        self.book = PartitionBook(("t", 0), 1, 0, 0)
        self.book.queue(0, [_action(i) for i in range(count)])

    def __enter__(self) -> _Rig:
        self.target.open()
        self.workers.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.workers.close()
        self.target.close()

    def hand_out(self) -> int:
        taken = take_due(
            [self.book], {"hook": self.target}, self.workers.room(), time.time(), _refuse, (), None
        )
        for name, entries in taken.items():
            self.workers.submit(name, entries)
        return sum(map(len, taken.values()))

    def answer(self) -> Answer:
        answer = self.answers.get(timeout=10)
        self.workers.answered(answer)
        for book, entry in answer.entries:
            if not answer.failures.get(entry.action.action_id):
                book.delivered(entry)
        return answer


def test_room_is_counted_in_actions_not_calls() -> None:
    with _Rig(_Async(concurrency=2, batch_size=4), count=3) as rig:
        assert rig.workers.room() == {"hook": 8}
        assert rig.hand_out() == 3
        # One call of 3: a thread-bound target would have 4 left (one call of 4), this 5.
        assert rig.workers.in_flight["hook"] == 1
        assert rig.workers.room() == {"hook": 5}
        answer = rig.answer()
        assert answer.called and answer.failures == {}
        assert rig.workers.room() == {"hook": 8}
        assert rig.target.threads == {rig.target._thread.name}  # no worker waited for it


def test_in_flight_stays_at_concurrency_times_batch_and_each_action_goes_once() -> None:
    with _Rig(_Async(concurrency=3, batch_size=4), count=400) as rig:
        handed = 0
        while rig.book.size:
            handed += rig.hand_out()
            assert rig.workers.actions_in_flight["hook"] <= 12
            rig.answer()
        while rig.workers.busy:
            rig.answer()
    assert handed == 400
    assert sorted(rig.target.sent) == [f"a{i:05d}" for i in range(400)]
    assert rig.target.peak == 12


def test_a_transient_failure_is_tried_again_in_place_by_a_worker() -> None:
    with _Rig(_Async(concurrency=2, batch_size=4), count=4) as rig:
        rig.target.fail = {
            "a00001": TargetError("503 for now"),
            "a00002": TargetRejected("404 for good"),
        }
        rig.hand_out()
        answer = rig.answer()
    # The retriable one went again (through a worker's deliver_many) and got through; the
    # final refusal was not tried again and is reported.
    assert rig.target.again == ["a00001"]
    assert set(answer.failures) == {"a00002"}
    # The lineage notes the attempt that failed and was tried again.
    assert [why for _, why in answer.retried["a00001"]] == ["TargetError: 503 for now"]
    assert set(answer.retried) == {"a00001"}
    assert len(answer.entries) == 4 and answer.called


def test_a_call_the_target_refuses_outright_is_answered_with_its_error() -> None:
    with _Rig(_Async(concurrency=1, batch_size=2), count=2) as rig:
        rig.target.broken = TargetError("webhook target hook is not open")
        rig.hand_out()
        answer = rig.answer()
        assert set(answer.failures) == {"a00000", "a00001"}
        assert all(isinstance(f, TargetError) for f in answer.failures.values())
        assert not rig.workers.busy


@pytest.mark.parametrize("attempts", [1, 3])
def test_retries_in_place_stop_at_the_policy(attempts: int) -> None:
    target = _Async(concurrency=1, batch_size=1)

    def always_503(actions: Sequence[Action]) -> dict[str, BaseException]:
        target.again.extend(a.action_id for a in actions)
        return {a.action_id: TargetError("503") for a in actions}

    target.deliver_many = always_503  # type: ignore[method-assign]
    target.fail = {"a00000": TargetError("503")}
    rig = _Rig(target, count=1)
    rig.workers.policy = RetryPolicy(inline_attempts=attempts, inline_wait=0.001)
    with rig:
        rig.hand_out()
        answer = rig.answer()
    assert target.again == ["a00000"] * (attempts - 1)
    assert set(answer.failures) == {"a00000"}
