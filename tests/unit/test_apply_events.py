"""apply_events (the pipeline's step 2 on a batch's events) with evaluators that say
whether they read rule state, on the memory store."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pytest

from checkpoint import open_store
from checkpoint.base import PipelineStore
from connector.pipeline.pipeline import apply_events
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
