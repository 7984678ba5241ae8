"""The evaluator the pipeline holds while ``run`` runs: the rules of the current config
version, less the paused ones (docs/architecture.md, "Reloading the config").

:class:`RuleSwitch` is still pure evaluation; what changes it (a reload replaces its
engine, a pause changes its paused names) is done by :mod:`connector.control` on the
pipeline's thread between two batches, so a batch is evaluated wholly by one version and
one set of pauses. A paused rule is evaluated as usual (its ``all_of`` sets fill and
complete) but its actions are dropped: the events are checkpointed without them, and
since a checkpointed event is never evaluated again, they are not made later either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kec.evaluation import Evaluation, Evaluator, Result, Timers, has_timers, reads_state
from kec.event import TP, Event

__all__ = ["RuleSwitch"]


class RuleSwitch:
    """An :class:`~kec.evaluation.Evaluator` over a replaceable one, dropping the actions
    of paused rules. Not thread-safe by design: only the pipeline's thread changes it,
    between batches."""

    def __init__(self, engine: Evaluator, version: int = 1) -> None:
        self.engine = engine
        self.version = version
        self.paused: frozenset[str] = frozenset()

    def replace(self, engine: Evaluator, version: int) -> None:
        self.engine = engine
        self.version = version

    def state_keys(self, event: Event) -> Sequence[str]:
        return self.engine.state_keys(event)

    def reads_state(self) -> bool:
        return reads_state(self.engine)

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        result = self.engine.evaluate(event, state)
        paused = self.paused
        if not paused or not result.actions:
            return result
        kept = [a for a in result.actions if a.rule not in paused]
        if len(kept) == len(result.actions):
            return result
        return Result(kept, result.state_updates, result.state_expiry)

    # The due pass of time-driven rules (kec.evaluation.Timers), paused rules dropped too.

    def has_timers(self) -> bool:
        return has_timers(self.engine)

    def timer_keys(self, tp: TP) -> Sequence[str]:
        return self.engine.timer_keys(tp) if isinstance(self.engine, Timers) else ()

    def due_keys(self, tp: TP, state: Mapping[str, str | None], now: int) -> Sequence[str]:
        return self.engine.due_keys(tp, state, now) if isinstance(self.engine, Timers) else ()

    def due(
        self, tp: TP, now: int, watermark: int | None, state: Mapping[str, str | None]
    ) -> Evaluation:
        if not isinstance(self.engine, Timers):
            return Result((), {})
        result = self.engine.due(tp, now, watermark, state)
        if not self.paused or not result.actions:
            return result
        kept = [a for a in result.actions if a.rule not in self.paused]
        return Result(kept, result.state_updates, result.state_expiry)
