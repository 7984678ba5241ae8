"""apply_events (the pipeline's step 2 on a batch's events) with evaluators that say
whether they read rule state, on the memory store."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pytest

from checkpoint import open_store
from checkpoint.base import PipelineStore
from connector.pipeline.pipeline import Applied, apply_events, evaluate_ahead
from kec.evaluation import Evaluation, NotifyAll, Result
from kec.event import Event


class Counting(NotifyAll):
    """NotifyAll that counts the state_keys calls and the state it is given."""

    def __init__(self, reads: bool | None) -> None:
        super().__init__("log")
        self.reads = reads
        self.asked = 0
        self.given: list[Mapping[str, str | None]] = []

    def reads_state(self) -> bool:  # None below: the method is absent
        assert self.reads is not None
        return self.reads

    def state_keys(self, event: Event) -> Sequence[str]:
        self.asked += 1
        return [f"row-{event.key}"] if event.key == "stateful" else []

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        self.given.append(state)
        return Result(super().evaluate(event, state).actions, {})


class Unsaid(Counting):
    reads_state = None  # type: ignore[assignment]  # an evaluator without the method


@pytest.fixture
def store() -> Iterator[PipelineStore]:
    s = open_store("memory://")
    s.open()
    yield s
    s.close()


def _events(keys: Sequence[str]) -> list[Event]:
    return [
        Event(key=k, value="{}", topic="t", partition=0, offset=i, create_time=1)
        for i, k in enumerate(keys)
    ]


@pytest.mark.parametrize(("evaluator", "asked"), [(Counting(False), 0), (Counting(True), 3),
                                                  (Unsaid(None), 3)])  # fmt: skip
def test_state_is_asked_for_only_by_evaluators_that_read_it(
    store: PipelineStore, evaluator: Counting, asked: int
) -> None:
    with store.batch() as tx:
        applied = apply_events(tx, evaluator, _events(["a", "stateful", "b"]))
    assert evaluator.asked == asked
    assert [e.key for e, _ in applied.actions] == ["a", "stateful", "b"]
    if asked:  # the rows it named, read: none stored yet
        assert evaluator.given[1] == {"row-stateful": None}
    else:
        assert all(dict(s) == {} for s in evaluator.given)


class Raising(Counting):
    """Reads no state; raises on the key "bad"."""

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        if event.key == "bad":
            raise ValueError("no")
        return super().evaluate(event, state)


class Updating(Counting):
    """Says it reads no state, yet a result writes some: it is not evaluated ahead."""

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        return Result(super().evaluate(event, state).actions, {"row": "x"})


def _mixed() -> list[Event]:
    events = _events(["a", "bad", "b", "c"])
    # an explicit id sent twice: the second copy is a duplicate, its actions dropped
    first = Event(key="d", value="{}", topic="t", partition=0, offset=4, event_id="order-1")
    again = Event(key="d", value="{}", topic="t", partition=0, offset=5, event_id="order-1")
    return [*events, first, again]


def _summary(applied: Applied) -> tuple[object, ...]:
    return (
        [e.offset for e in applied.new],
        [(e.offset, a.action_id) for e, a in applied.actions],
        [(e.offset, str(exc)) for e, exc in applied.failed],
        applied.skipped,
    )


def test_evaluated_ahead_is_what_the_transaction_would_have_made(store: PipelineStore) -> None:
    events = _mixed()
    skip = {events[3].coordinates}
    inside = Raising(False)
    with store.batch() as tx:
        expected = apply_events(tx, inside, events, skip)
    other = open_store("memory://")
    other.open()
    try:
        evaluator = Raising(False)
        ahead = evaluate_ahead(evaluator, events, skip)
        assert ahead is not None
        assert len(ahead.results) == len(events) - 1  # all but the skipped one
        assert isinstance(ahead.results[id(events[1])], ValueError)
        # the record as it would be: the events that did not fail, the duplicate too
        (record,) = ahead.records.values()
        assert [e.offset for e in record.events] == [0, 2, 4, 5]
        calls = len(evaluator.given)
        with other.batch() as tx:
            applied = apply_events(tx, evaluator, events, skip, ahead.results)
        assert len(evaluator.given) == calls  # nothing evaluated again inside
    finally:
        other.close()
    assert _summary(applied) == _summary(expected)
    assert _summary(applied)[0] == [0, 2, 4]  # "bad" failed, "c" skipped, the copy dropped


@pytest.mark.parametrize("evaluator", [Counting(True), Unsaid(None), Updating(False)])
def test_evaluators_that_touch_state_are_not_evaluated_ahead(evaluator: Counting) -> None:
    assert evaluate_ahead(evaluator, _events(["a", "b"])) is None
