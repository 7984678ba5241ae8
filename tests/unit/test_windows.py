"""Time-driven rules (debounce, throttle, batch, absence): the pure evaluator driven as the
pipeline drives it, on the memory store (SQLite in memory): each step is one batch
transaction (``apply_events``, then the due pass ``fire_due``, then ``append``) or an idle
tick (the due pass and an ``append`` of no records). Properties over generated event
sequences: the actions equal a plain reference model whatever the batching, the idle ticks
(at times no record still to read is older than) and the crashes (a transaction given up
and tried again), each action once with an id derived from its events; then late and
duplicate events by example."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from checkpoint import open_store
from connector.pipeline.pipeline import apply_events
from connector.pipeline.timers import fire_due
from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from kec.action import Action, action_id
from kec.errors import Fenced
from kec.event import TP, Event

TOPIC = "events.default"
P0: TP = (TOPIC, 0)
P1: TP = (TOPIC, 1)
T0 = 1_700_000_000_000  # ms

modest = settings(max_examples=40, deadline=None)


class Crash(Exception):
    """A transaction given up before its commit (the process died)."""


class Harness:
    """The pipeline's step 2 for given partitions, without Kafka: what a connector writes."""

    def __init__(self, rules: Sequence[dict[str, Any]], tps: Sequence[TP] = (P0,)) -> None:
        self.store = open_store("memory://")
        self.store.open()
        self.engine = TriggerEngine([Rule.model_validate(r) for r in rules])
        claims = self.store.claim("me", tps)
        self.epoch = {tp: c.epoch for tp, c in claims.items()}
        self.offset = dict.fromkeys(tps, 0)
        self.actions: list[Action] = []

    def close(self) -> None:
        self.store.close()

    def event(self, tp: TP, key: str, t: int, value: Any = None, eid: str | None = None) -> Event:
        """An event as read from ``tp`` at its next offset (not checkpointed yet)."""
        offset = self.offset[tp]
        self.offset[tp] += 1
        text = json.dumps(value if value is not None else {"n": offset})
        return Event(
            key=key, value=text, create_time=t, topic=tp[0], partition=tp[1], offset=offset,
            **({"event_id": eid} if eid else {}),
        )  # fmt: skip

    def batch(self, tp: TP, events: Sequence[Event], *, crash: bool = False) -> None:
        """One batch of ``tp``'s events; ``crash``: given up before its commit, then the
        same records are read again and checkpointed (as after a restart)."""
        if crash:
            with contextlib.suppress(Crash), self.store.batch() as tx:
                self._step(tx, tp, events)
                raise Crash
        with self.store.batch() as tx:
            fired = self._step(tx, tp, events)
        self.actions.extend(fired)

    def _step(self, tx: Any, tp: TP, events: Sequence[Event]) -> list[Action]:
        applied = apply_events(tx, self.engine, events)
        assert not applied.failed, applied.failed
        actions = [a for _, a in applied.actions]
        now = max(e.create_time for e in events)
        actions += fire_due(tx, self.engine, {tp: now}).get(tp, [])
        first = events[0].offset
        assert first is not None
        tx.append(tp, self.epoch[tp], first, first + len(events), applied.new, actions, now)
        return actions

    def tick(self, tp: TP, now: int, *, crash: bool = False) -> None:
        """The idle rule: ``tp``'s event time moves to ``now`` with no record."""
        done = self.store.next_offsets().get(tp, 0)
        if crash:
            with contextlib.suppress(Crash), self.store.batch() as tx:
                fired = fire_due(tx, self.engine, {tp: now}).get(tp, [])
                tx.append(tp, self.epoch[tp], done, done, [], fired, now)
                raise Crash
        with self.store.batch() as tx:
            fired = fire_due(tx, self.engine, {tp: now}).get(tp, [])
            tx.append(tp, self.epoch[tp], done, done, [], fired, now)
        self.actions.extend(fired)

    def ids(self) -> list[str]:
        return [a.action_id for a in self.actions]


@st.composite
def schedules(draw: st.DrawFn, keys: Sequence[str], quiet: int) -> list[tuple[str, int]]:
    """Events (key, create time) in time order, gaps around ``quiet``."""
    t = T0
    out = []
    for _ in range(draw(st.integers(1, 25))):
        t += draw(st.sampled_from([0, 1, quiet // 2, quiet - 1, quiet, quiet + 1, 3 * quiet]))
        out.append((draw(st.sampled_from(keys)), t))
    return out


def drive(
    h: Harness, tp: TP, events: list[Event], draw: st.DrawFn, last_tick: int | None = None
) -> None:
    """Feed ``events`` (time order) in random batches, with random crashes and idle ticks
    at times no later than the next event's (none of them is then late)."""
    i = 0
    while i < len(events):
        n = draw(st.integers(1, 4))
        chunk = events[i : i + n]
        h.batch(tp, chunk, crash=draw(st.booleans()))
        i += n
        if i < len(events) and draw(st.booleans()):
            low = chunk[-1].create_time
            h.tick(tp, draw(st.integers(low, events[i].create_time)), crash=draw(st.booleans()))
    if last_tick is not None:
        h.tick(tp, last_tick)


# -- debounce ---------------------------------------------------------------------------


def debounce_reference(events: list[Event], quiet: int, carry: str) -> dict[str, Any]:
    """Per key, bursts split where a gap reaches ``quiet``: action id -> (count, carried)."""
    out: dict[str, Any] = {}
    by_key: dict[str, list[Event]] = {}
    for e in events:
        by_key.setdefault(e.key, []).append(e)
    for group in by_key.values():
        bursts: list[list[Event]] = [[group[0]]]
        for prev, e in itertools.pairwise(group):
            if e.create_time - prev.create_time >= quiet:
                bursts.append([])
            bursts[-1].append(e)
        for burst in bursts:
            first, last = burst[0].event_id, burst[-1].event_id
            ids = (first,) if len(burst) == 1 else (first, last)
            carried = burst[-1] if carry == "last" else burst[0]
            out[action_id("d", ids)] = (len(burst), carried.event_id)
    return out


@modest
@given(st.data(), st.sampled_from(["last", "first"]))
def test_debounce_one_action_per_burst_whatever_the_batches_ticks_and_crashes(
    data: st.DataObject, carry: str
) -> None:
    quiet = 10_000
    rule = {"name": "d", "key": "k*", "action": "notify", "debounce": {"quiet": 10, "carry": carry}}
    h = Harness([rule])
    try:
        plan = data.draw(schedules(["k1", "k2"], quiet))
        events = [h.event(P0, k, t) for k, t in plan]
        drive(h, P0, events, data.draw, last_tick=plan[-1][1] + quiet)
        expected = debounce_reference(events, quiet, carry)
        assert sorted(h.ids()) == sorted(expected), "each burst once, none twice"
        for a in h.actions:
            count, carried = expected[a.action_id]
            assert a.payload["count"] == count
            assert a.payload["event_id"] == carried
        assert h.engine.timer_keys(P0)
        assert h.store.read_rule_state(h.engine.timer_keys(P0)) == {}, "no burst left open"
    finally:
        h.close()


def test_debounce_late_event_joins_the_open_burst_and_after_it_starts_a_new_one() -> None:
    rule = {"name": "d", "key": "k", "action": "notify", "debounce": {"quiet": 10}}
    h = Harness([rule])
    try:
        a, b = h.event(P0, "k", T0 + 5_000), h.event(P0, "k", T0)  # b is late: older than a
        h.batch(P0, [a])
        h.batch(P0, [b])
        h.tick(P0, T0 + 14_999)
        assert h.actions == [], "quiet since the newest event (a), not the late one"
        h.tick(P0, T0 + 15_000)
        (fired,) = h.actions
        assert fired.payload["count"] == 2
        assert fired.payload["event_id"] == a.event_id, "the last by create time"
        assert fired.event_ids == (b.event_id, a.event_id), "first and last by create time"
        late = h.event(P0, "k", T0 + 1_000)  # after its burst fired: a burst of its own
        h.batch(P0, [late])
        h.tick(P0, T0 + 20_000)
        assert [x.event_ids for x in h.actions[1:]] == [(late.event_id,)]
    finally:
        h.close()


# -- throttle ---------------------------------------------------------------------------


@modest
@given(st.data())
def test_throttle_at_most_one_action_per_period_the_rest_counted_in_the_next(
    data: st.DataObject,
) -> None:
    period = 10_000
    rule = {"name": "t", "key": "k*", "action": "notify", "throttle": {"period": 10}}
    h = Harness([rule])
    try:
        plan = data.draw(schedules(["k1", "k2"], period))
        events = [h.event(P0, k, t) for k, t in plan]
        drive(h, P0, events, data.draw)
        expected: list[tuple[str, int]] = []
        state: dict[str, tuple[int, int]] = {}  # key -> (until, counted)
        for e in events:
            until, counted = state.get(e.key, (0, 0))
            if e.create_time < until:
                state[e.key] = (until, counted + 1)
            else:
                expected.append((action_id("t", (e.event_id,)), counted))
                state[e.key] = (e.create_time + period, 0)
        assert [(a.action_id, a.payload["suppressed"]) for a in h.actions] == expected
    finally:
        h.close()


# -- batch ------------------------------------------------------------------------------


@modest
@given(st.data(), st.integers(1, 5))
def test_batch_every_event_in_exactly_one_batch_of_at_most_size_or_within(
    data: st.DataObject, size: int
) -> None:
    within = 10_000
    rule = {"name": "b", "key": "k*", "action": "notify", "batch": {"size": size, "within": 10}}
    h = Harness([rule])
    try:
        plan = data.draw(schedules(["k1", "k2"], within))
        events = [h.event(P0, k, t) for k, t in plan]
        drive(h, P0, events, data.draw, last_tick=plan[-1][1] + within)
        expected: list[tuple[str, ...]] = []
        open_: list[Event] = []
        for e in events:
            if open_ and e.create_time >= open_[0].create_time + within:
                expected.append(tuple(x.event_id for x in open_))
                open_ = []
            open_.append(e)
            if len(open_) == size:
                expected.append(tuple(x.event_id for x in open_))
                open_ = []
        if open_:
            expected.append(tuple(x.event_id for x in open_))
        assert [a.event_ids for a in h.actions] == expected
        assert [a.action_id for a in h.actions] == [action_id("b", ids) for ids in expected]
        for a in h.actions:
            assert [x["value"] for x in a.payload["events"]] == [
                json.loads(e.value)
                for e in events
                if e.event_id in a.event_ids  # type: ignore[arg-type]
            ]
    finally:
        h.close()


def test_batch_duplicates_are_taken_once_and_values_are_bounded() -> None:
    rule = {
        "name": "b", "key": "k", "action": "notify",
        "batch": {"size": 3, "within": 60, "max_bytes": 45},
    }  # fmt: skip
    h = Harness([rule])
    try:
        first = h.event(P0, "k", T0, {"text": "x" * 20}, eid="id-1")
        again = h.event(P0, "k", T0 + 1, {"text": "x" * 20}, eid="id-1")  # a resend
        second = h.event(P0, "k", T0 + 2, {"text": "y" * 20}, eid="id-2")
        third = h.event(P0, "k", T0 + 3, {"text": "z"}, eid="id-3")
        h.batch(P0, [first, again])
        h.batch(P0, [second, third])
        (fired,) = h.actions
        assert fired.event_ids == ("id-1", "id-2", "id-3")
        assert [e.get("value") for e in fired.payload["events"]] == [
            {"text": "x" * 20}, None, {"text": "z"},
        ]  # fmt: skip
        assert fired.payload["values_dropped"] == 1
        assert fired.payload["reason"] == "size"
    finally:
        h.close()


# -- absence ----------------------------------------------------------------------------


@modest
@given(st.data())
def test_absence_fires_for_every_a_no_b_followed_within_whatever_the_interleaving(
    data: st.DataObject,
) -> None:
    """A on partition 0, B on partition 1, one group; strictly increasing times, read in
    time order in random batches and ticks; the watermark is the least partition time."""
    within = 10_000
    rule = {
        "name": "x", "key": "a", "action": "notify",
        "absence": {"then": "b", "within": 10, "by": "value.order"},
    }  # fmt: skip
    h = Harness([rule], (P0, P1))
    try:
        t = T0
        plan: list[tuple[str, int]] = []
        for _ in range(data.draw(st.integers(1, 20))):
            t += data.draw(st.sampled_from([1, within // 3, within - 1, within + 1, 2 * within]))
            plan.append((data.draw(st.sampled_from(["a", "b"])), t))
        events = [h.event(P0 if k == "a" else P1, k, t, {"order": 7}) for k, t in plan]
        i = 0
        while i < len(events):
            tp = (TOPIC, events[i].partition)
            n = 1
            while i + n < len(events) and events[i + n].partition == tp[1] and n < 3:
                n += 1
            h.batch(tp, events[i : i + n], crash=data.draw(st.booleans()))
            i += n
            if i < len(events) and data.draw(st.booleans()):
                other = data.draw(st.sampled_from([P0, P1]))
                h.tick(other, events[i].create_time - 1, crash=data.draw(st.booleans()))
        end = plan[-1][1] + within
        h.tick(P1, end)
        h.tick(P0, end)
        bs = [e.create_time for e in events if e.key == "b"]
        expected = [
            action_id("x", (e.event_id,))
            for e in events
            if e.key == "a" and not any(e.create_time <= b <= e.create_time + within for b in bs)
        ]
        assert sorted(h.ids()) == sorted(expected)
        assert len(set(h.ids())) == len(h.ids())
    finally:
        h.close()


def test_absence_b_read_before_its_a_answers_it_and_a_late_b_does_not() -> None:
    rule = {
        "name": "x", "key": "a", "action": "notify",
        "absence": {"then": "b", "within": 10, "by": "value.order"},
    }  # fmt: skip
    h = Harness([rule], (P0, P1))
    try:
        b = h.event(P1, "b", T0 + 5_000, {"order": 1})
        a = h.event(P0, "a", T0, {"order": 1})  # created before b, read after it
        h.batch(P1, [b])
        h.batch(P0, [a])
        late_a = h.event(P0, "a", T0 + 20_000, {"order": 2})
        h.batch(P0, [late_a])
        h.tick(P0, T0 + 40_000)
        assert h.actions == [], "P1 (at T0+5s) holds the watermark back: a B may still come"
        late_b = h.event(P1, "b", T0 + 31_000, {"order": 2})  # past late_a's deadline
        h.batch(P1, [late_b])
        h.tick(P0, T0 + 40_001)
        (fired,) = h.actions
        assert fired.event_ids == (late_a.event_id,)
        assert fired.payload["deadline"] == T0 + 30_000
    finally:
        h.close()


def test_a_rule_takes_one_time_feature_with_key_only() -> None:
    base = {"name": "r", "action": "notify"}
    with pytest.raises(ValidationError, match="at most one"):
        Rule.model_validate(
            {**base, "key": "k", "debounce": {"quiet": 1}, "batch": {"size": 2, "within": 1}}
        )
    with pytest.raises(ValidationError, match="takes `key`"):
        Rule.model_validate(
            {**base, "all_of": {"keys": ["a", "b"], "policy": "latest"}, "throttle": {"period": 1}}
        )
    with pytest.raises(ValidationError, match=r"value\.PATH"):
        Rule.model_validate({**base, "key": "k", "debounce": {"quiet": 1, "by": "value."}})


def test_the_python_rule_api_compiles_to_the_same_time_driven_rules() -> None:
    from connector.rules import Absence, Debounce
    from connector.workflow import Task, TaskAction, Workflow

    with Workflow(name="shop", namespace="shop") as wf:
        remind = Task("remind")
        by_task = remind.action_on_event_received(
            TaskAction.START,
            "order-created",
            name="unpaid",
            absence=Absence(then="order-paid", within=900, by="value.order"),
        )
    by_wf = wf.trigger_on_event("item-*", name="reprice", debounce=Debounce(quiet=10))
    assert by_wf == Rule.model_validate(
        {"name": "reprice", "namespace": "shop", "key": "item-*", "action": "start",
         "workflow": "shop", "debounce": {"quiet": 10}}
    )  # fmt: skip
    assert by_task.absence == Absence.model_validate(
        {"then": "order-paid", "within": 900, "by": "value.order"}
    )
    assert by_task.patterns == ("order-created", "order-paid")


def test_only_the_partitions_owner_fires_a_stale_epochs_tick_changes_nothing() -> None:
    rule = {"name": "d", "key": "k", "action": "notify", "debounce": {"quiet": 10}}
    h = Harness([rule])
    try:
        h.batch(P0, [h.event(P0, "k", T0)])
        stale = h.epoch[P0]
        h.store.claim("another", [P0])  # another instance took the partition over
        keys = h.engine.timer_keys(P0)
        before = h.store.read_rule_state(keys)
        fired: list[Action] = []

        def tick() -> None:
            with h.store.batch() as tx:
                fired.extend(fire_due(tx, h.engine, {P0: T0 + 60_000}).get(P0, []))
                tx.append(P0, stale, 1, 1, [], fired, T0 + 60_000)

        with pytest.raises(Fenced):
            tick()
        assert len(fired) == 1, "it was due, but its transaction is refused whole"
        assert h.store.read_rule_state(keys) == before, "the burst is still open"
    finally:
        h.close()


def test_a_task_rules_groups_are_per_execution_and_its_action_carries_the_context() -> None:
    rule = {
        "name": "d", "key": "k", "action": "START", "workflow": "wf", "task": "t",
        "debounce": {"quiet": 10},
    }  # fmt: skip
    h = Harness([rule])
    try:
        events = [
            Event(key="k", value="{}", context=ctx, create_time=T0 + i, topic=TOPIC,
                  partition=0, offset=i)
            for i, ctx in enumerate(["x", "y", "x", None])
        ]  # fmt: skip
        h.offset[P0] = len(events)
        h.batch(P0, events)
        h.tick(P0, T0 + 20_000)
        assert sorted((a.context, a.payload["count"]) for a in h.actions) == [("x", 2), ("y", 1)]
    finally:
        h.close()


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "d", "key": "k", "action": "notify", "debounce": {"quiet": 10}},
        {"name": "d", "key": "k", "action": "notify", "batch": {"size": 9, "within": 10}},
        {"name": "d", "key": "k", "action": "notify", "throttle": {"period": 10}},
        {"name": "d", "key": "k", "action": "notify", "absence": {"then": "b", "within": 10}},
    ],
    ids=["debounce", "batch", "throttle", "absence"],
)
def test_an_unreadable_row_counts_as_none_and_is_replaced(rule: dict[str, Any]) -> None:
    """A row of the right version but the wrong shape (hand-edited, corrupt) neither
    fails the event nor blocks the partition's due pass."""
    h = Harness([rule])
    try:
        event = h.event(P0, "k", T0)
        bad = json.dumps({"v": 1, "groups": {'[null, "k"]': {"x": 1}}, "a": [{}], "due": 5})
        with h.store.batch() as tx:
            tx.write_rule_state(dict.fromkeys(h.engine.state_keys(event), bad))
            tx.write_rule_state(dict.fromkeys(h.engine.timer_keys(P0), bad))
        h.batch(P0, [event])
        h.tick(P0, T0 + 60_000)
        assert [a.event_ids for a in h.actions] == [(event.event_id,)]
    finally:
        h.close()


@st.composite
def shuffled(draw: st.DrawFn, quiet: int) -> list[tuple[str, int]]:
    """Events in any order of create time: late ones (older than some read before) too."""
    plan = draw(schedules(["k1", "k2"], quiet))
    return draw(st.permutations(plan))


@modest
@given(st.data(), st.integers(1, 5))
def test_late_events_each_is_in_exactly_one_batch_or_one_burst(
    data: st.DataObject, size: int
) -> None:
    """Whatever the order of create times (late events), batching, ticks and crashes:
    every event is counted in exactly one action, none is made twice, no batch is larger
    than its size, and nothing is left open once time has passed every window."""
    quiet = 10_000
    rules = [
        {"name": "d", "key": "k*", "action": "notify", "debounce": {"quiet": 10}},
        {"name": "b", "key": "k*", "action": "notify", "batch": {"size": size, "within": 10}},
    ]
    h = Harness(rules)
    try:
        plan = data.draw(shuffled(quiet))
        events = [h.event(P0, k, t) for k, t in plan]
        i = 0
        while i < len(events):
            n = data.draw(st.integers(1, 4))
            h.batch(P0, events[i : i + n], crash=data.draw(st.booleans()))
            i += n
            if data.draw(st.booleans()):  # an idle tick at any time: makes later events late
                h.tick(P0, data.draw(st.integers(T0, T0 + 100 * quiet)))
        h.tick(P0, max(t for _, t in plan) + 100 * quiet)
        assert len(set(h.ids())) == len(h.ids()), "no action twice"
        bursts = [a for a in h.actions if a.rule == "d"]
        batches = [a for a in h.actions if a.rule == "b"]
        assert sum(a.payload["count"] for a in bursts) == len(events)
        counted = [eid for a in batches for eid in a.event_ids]
        assert sorted(counted) == sorted(e.event_id for e in events), "each in one batch"
        assert all(len(a.event_ids) <= size for a in batches)
        assert h.store.read_rule_state(h.engine.timer_keys(P0)) == {}, "nothing left open"
    finally:
        h.close()
