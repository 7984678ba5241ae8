"""Per-target flow control (connector/dispatch/flow.py, delivery.py's in-flight cap): the
token bucket's bounds, the cap on actions in flight with real worker threads, the
per-key buckets in the schedule, the config's validation and the merged metrics.
The run against a real broker is tests/integration/test_flow_control.py's."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.common.retry import RetryPolicy
from connector.config.targets import parse_target
from connector.dispatch.delivery import Answer, TargetWorkers
from connector.dispatch.flow import FlowControl, TokenBucket
from connector.dispatch.lanes import Entry, PartitionBook
from connector.dispatch.schedule import take_due
from connector.metrics.core import Snapshot
from connector.pipeline.pipeline import _PauseLog
from connector.supervisor import counters_of, merge_snapshots
from connector.targets.base import FlowLimits, Target
from connector.targets.registry import build_target
from kec.action import Action, ActionKind
from kec.errors import ConfigError, TargetError

# -- the token bucket -----------------------------------------------------------------------

requests = st.lists(
    st.tuples(st.floats(0.0, 2.0), st.integers(0, 50)),  # (seconds since the last, asked)
    min_size=1,
    max_size=60,
)


@given(
    rate=st.floats(0.5, 500.0),
    burst=st.floats(1.0, 100.0),
    asks=requests,
)
@settings(max_examples=300, deadline=None)
def test_no_window_gets_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: float, asks: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now = 0.0
    granted: list[tuple[float, int]] = []
    for gap, n in asks:
        now += gap
        got = bucket.take(n, now)
        assert 0 <= got <= n
        granted.append((now, got))
    for i, (start, _) in enumerate(granted):
        total = 0
        for when, got in granted[i:]:
            total += got
            assert total <= burst + rate * (when - start) + 1e-6


@given(rate=st.floats(0.5, 500.0), burst=st.floats(1.0, 100.0), steps=st.integers(1, 200))
@settings(max_examples=200, deadline=None)
def test_a_caller_that_always_asks_gets_the_rate(rate: float, burst: float, steps: int) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now, total = 0.0, 0
    for _ in range(steps):
        total += bucket.take(10**6, now)
        now += bucket.wait(now) or 1e-3
    end = now
    # What it held at the start plus what it gained, less the fraction it could not spend.
    assert total >= math.floor(burst + rate * end) - 1 - 1e-6 * rate * end
    assert total <= burst + rate * end + 1e-6


def test_the_wait_is_until_a_whole_token() -> None:
    bucket = TokenBucket(10.0, 2.0, 100.0)
    assert bucket.take(5, 100.0) == 2
    assert bucket.available(100.0) == 0
    assert bucket.wait(100.0) == pytest.approx(0.1)
    assert bucket.available(100.1 + 1e-9) == 1
    assert bucket.available(99.0) == 1  # a clock that goes back gives nothing, takes nothing
    assert not bucket.full(100.15) and bucket.full(100.3)


def test_a_bucket_that_could_never_grant_is_refused() -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(0.0, 5.0, 0.0)
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(1.0, 0.5, 0.0)


# -- the cap on actions in flight, with real worker threads ---------------------------------


class _Slow(Target):
    """Answers after a while and notes how many calls it had at once."""

    def __init__(self, name: str, concurrency: int, batch_size: int = 1) -> None:
        self.name = name
        self.concurrency = concurrency
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.seen: list[str] = []

    def deliver(self, action: Action) -> None:
        raise AssertionError("deliver_many is called")

    def deliver_many(self, actions: Sequence[Action]) -> dict[str, BaseException]:
        batch = list(actions)
        with self._lock:
            self.now += len(batch)
            self.peak = max(self.peak, self.now)
        time.sleep(0.002)  # the slow target itself, not synchronisation
        with self._lock:
            self.now -= len(batch)
            self.seen.extend(a.action_id for a in batch)
        return {}


def _action(n: int, target: str, key: str) -> Action:
    return Action(
        rule="r", kind=ActionKind.NOTIFY, target=target, namespace="shop",
        event_ids=(f"t/0/{n}",), event_key=key, action_id=f"a{n:05d}",
    )  # fmt: skip


def _run_rounds(
    book: PartitionBook, target: _Slow, flow: FlowControl | None = None, rounds: int = 10_000
) -> TargetWorkers:
    answers: list[Answer] = []
    lock = threading.Condition()

    def answered(answer: Answer) -> None:
        with lock:
            answers.append(answer)
            lock.notify()

    targets = {target.name: target}
    workers = TargetWorkers(targets, RetryPolicy(), answered)
    workers.open()

    def refuse(book: PartitionBook, entry: Entry, error: TargetError) -> None:
        raise AssertionError(error)

    try:
        for _ in range(rounds):
            if book.size == 0:
                break
            room = workers.room()
            cap = target.flow.max_in_flight
            assert cap is None or room[target.name] <= cap - workers.actions_in_flight[target.name]
            if flow is not None:
                flow.begin(targets, room, time.monotonic())
            taken = take_due([book], targets, room, time.time(), refuse, (), flow)
            for name, entries in taken.items():
                workers.submit(name, entries)
            if cap is not None:
                assert workers.actions_in_flight[target.name] <= cap
            with lock:
                if not answers:
                    lock.wait(0.5)
                done, answers[:] = list(answers), []
            for answer in done:
                workers.answered(answer)
                for b, entry in answer.entries:
                    b.delivered(entry)
    finally:
        workers.close()
    return workers


@pytest.mark.parametrize("batch_size", [1, 3])
def test_never_more_actions_in_flight_than_max_in_flight(batch_size: int) -> None:
    target = _Slow("hook", concurrency=16, batch_size=batch_size)
    target.flow = FlowLimits(max_in_flight=4)
    book = PartitionBook(("t", 0), 1, 0, 0)
    book.queue(0, [_action(i, "hook", f"k{i % 50}") for i in range(300)])
    workers = _run_rounds(book, target)
    assert book.size == 0
    assert sorted(target.seen) == [f"a{i:05d}" for i in range(300)]  # each once
    assert 1 <= target.peak <= 4
    assert target.peak == 4  # the cap, not something lower, is what held it
    assert workers.actions_in_flight["hook"] == 0


def test_without_a_cap_concurrency_is_the_bound() -> None:
    target = _Slow("hook", concurrency=8)
    book = PartitionBook(("t", 0), 1, 0, 0)
    book.queue(0, [_action(i, "hook", f"k{i}") for i in range(200)])
    _run_rounds(book, target)
    assert book.size == 0 and 4 < target.peak <= 8


# -- rate limits in the schedule --------------------------------------------------------------


def _refuse(book: PartitionBook, entry: Entry, error: TargetError) -> None:
    raise AssertionError(error)


def test_a_target_wide_rate_narrows_its_room_and_counts_the_time_held() -> None:
    target = _Slow("hook", concurrency=100)
    target.flow = FlowLimits(per_second=10.0, burst=3.0)
    targets = {"hook": target}
    book = PartitionBook(("t", 0), 1, 0, 0)
    book.queue(0, [_action(i, "hook", f"k{i}") for i in range(10)])
    flow = FlowControl()
    room = {"hook": 100}
    flow.begin(targets, room, 0.0)
    assert room == {"hook": 3}
    first = take_due([book], targets, room, 0.0, _refuse, (), flow)
    assert [e.aseq for _, e in first["hook"]] == [0, 1, 2]
    assert flow.wake_in() == pytest.approx(0.1)  # the next token
    room = {"hook": 100}
    flow.begin(targets, room, 0.25)  # 2.5 tokens came: 2 whole ones
    assert room == {"hook": 2}
    again = take_due([book], targets, room, 0.0, _refuse, (), flow)
    assert [e.aseq for _, e in again["hook"]] == [3, 4]
    flow.begin(targets, {"hook": 100}, 0.5)
    assert flow.throttled_seconds == {"hook": pytest.approx(0.5)}  # held in both rounds


def test_per_key_buckets_hold_one_key_back_and_let_the_others_go() -> None:
    target = _Slow("hook", concurrency=100)
    target.flow = FlowLimits(per_second=1.0, burst=1.0, per_key=True)
    other = _Slow("log", concurrency=100)
    targets = {"hook": target, "log": other}
    book = PartitionBook(("t", 0), 1, 0, 0)
    # Key a's second action waits for its bucket; b and the other target go meanwhile.
    book.queue(0, [_action(0, "hook", "a"), _action(1, "hook", "b"), _action(2, "log", "a")])
    flow = FlowControl()
    room = {"hook": 100, "log": 100}
    flow.begin(targets, room, 0.0)
    taken = take_due([book], targets, room, 0.0, _refuse, (), flow)
    for b, entry in [*taken["hook"], *taken["log"]]:
        b.delivered(entry)
    book.queue(3, [_action(3, "hook", "a"), _action(4, "hook", "c"), _action(5, "log", "z")])
    room = {"hook": 100, "log": 100}
    flow.begin(targets, room, 0.5)
    taken = take_due([book], targets, room, 0.0, _refuse, (), flow)
    assert sorted(e.action.action_id for _, e in taken["hook"]) == ["a00004"]  # key c
    assert [e.action.action_id for _, e in taken["log"]] == ["a00005"]
    assert flow.wake_in() == pytest.approx(0.5)
    room = {"hook": 100, "log": 100}
    flow.begin(targets, room, 1.0)
    taken = take_due([book], targets, room, 0.0, _refuse, (), flow)
    assert [e.action.action_id for _, e in taken["hook"]] == ["a00003"]  # a's token came


def test_a_target_without_room_does_not_hide_another_targets_actions() -> None:
    hook, log_ = _Slow("hook", 1), _Slow("log", 1)
    targets = {"hook": hook, "log": log_}
    book = PartitionBook(("t", 0), 1, 0, 0)
    book.queue(0, [_action(i, "hook", f"k{i}") for i in range(5)] + [_action(5, "log", "x")])
    taken = take_due([book], targets, {"hook": 0, "log": 1}, 0.0, _refuse)
    assert [e.aseq for _, e in taken["log"]] == [5]
    # The lanes held back keep their order and go first once there is room.
    taken = take_due([book], targets, {"hook": 2, "log": 0}, 0.0, _refuse)
    assert [e.aseq for _, e in taken["hook"]] == [0, 1]


# -- configuration ----------------------------------------------------------------------------


def test_every_target_type_takes_flow_limits() -> None:
    target = build_target(
        "hook",
        {
            "type": "webhook",
            "url": "http://127.0.0.1:9/x",
            "max_in_flight": 4,
            "rate": {"per_second": 200, "burst": 20, "per_key": True},
        },
    )
    assert target.flow == FlowLimits(4, 200.0, 20.0, True)
    assert build_target("audit", {"type": "log"}).flow == FlowLimits()
    assert FlowLimits(per_second=0.5).capacity == 1.0 and FlowLimits(per_second=50).capacity == 50


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"max_in_flight": 0}, "max_in_flight: Input should be greater than 0"),
        ({"rate": {"per_second": 0}}, "rate.per_second: Input should be greater than 0"),
        ({"rate": {"per_second": 5, "burst": 0.5}}, "rate.burst"),
        ({"rate": {"burst": 5}}, "rate.per_second: Field required"),
        ({"rate": {"per_second": 5, "perkey": True}}, "rate.perkey: Extra inputs"),
    ],
)
def test_bad_flow_limits_are_named(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="target 'audit'") as caught:
        parse_target("audit", {"type": "log", **spec})
    assert message in str(caught.value)


# -- metrics and log --------------------------------------------------------------------------


def test_the_supervisor_adds_up_throttled_time_and_in_flight() -> None:
    one = Snapshot(throttled_seconds_by_target={"hook": 1.5}, in_flight_by_target={"hook": 2})
    two = Snapshot(throttled_seconds_by_target={"hook": 0.5}, in_flight_by_target={"hook": 1})
    merged = merge_snapshots([one, two])
    assert merged.throttled_seconds_by_target == {"hook": 2.0}
    assert merged.in_flight_by_target == {"hook": 3}
    kept = counters_of(merged)  # a dead child's counters stay, its gauges do not
    assert kept.throttled_seconds_by_target == {"hook": 2.0}
    assert kept.in_flight_by_target == {}


def test_the_pause_lines_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    lines = _PauseLog(interval=30.0)
    caplog.set_level(logging.INFO, logger="connector.pipeline.pipeline")
    lines.paused(0.0, 120, 100, 4)
    lines.resumed(0.5, 70, 0.5)
    for t in range(1, 10):  # flapping: not logged
        lines.paused(float(t), 120, 100, 4)
        lines.resumed(t + 0.5, 70, 0.5)
    lines.paused(40.0, 130, 100, 4)
    text = [r.getMessage() for r in caplog.records]
    assert text == [
        "backpressure: 120 actions wait for delivery (limit 100): pausing 4 partition(s)",
        "backpressure: 70 actions wait for delivery: resuming partitions after 0.5s",
        "backpressure: 130 actions wait for delivery (limit 100): pausing 4 partition(s); "
        "9 more pause(s) since the last line",
    ]
