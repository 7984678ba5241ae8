"""The due pass: time-driven rules fire inside the transaction that moves event time.

A ``debounce`` whose quiet period is over, a ``batch`` whose time is up, an ``absence``
whose deadline passed: each fires because the event time moved, possibly with no record
to carry it. The pipeline therefore runs :func:`fire_due` in every store transaction that
moves a partition's event time: a batch's (after its events are evaluated), and an idle
tick's (the idle rule moves an idle partition's event time to the present every
``idle_interval``; see docs/architecture.md, "Time-driven rules"). The actions go into the
partition's batch record and its state changes into the same transaction, under the
owner's epoch: a crash before the commit fires nothing, one after it finds the state gone
and the actions queued, so each fires once, and only the partition's owner fires them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from checkpoint.base import BatchTransaction
from kec.action import Action
from kec.evaluation import Evaluator, Timers, has_timers
from kec.event import TP

__all__ = ["fire_due", "has_timers"]


def fire_due(
    tx: BatchTransaction, evaluator: Evaluator, now: Mapping[TP, int]
) -> dict[TP, list[Action]]:
    """Run the due pass of each partition of ``now`` (its event time, ms) inside ``tx``:
    two reads of rule state (the timer rows, then the rows due), the watermark when an
    ``absence`` may be due, one write. Returns the actions fired, per partition."""
    if not now or not has_timers(evaluator):
        return {}
    timers = cast(Timers, evaluator)
    keys = [k for tp in now for k in timers.timer_keys(tp)]
    if not keys:
        return {}
    state: dict[str, str | None] = dict(tx.read_rule_state(keys))
    if not state:
        return {}
    more = [k for tp, at in now.items() for k in timers.due_keys(tp, state, at)]
    watermark = None
    if more:
        # First: the rows read after it are at least as new as the times it saw.
        watermark = tx.event_time_watermark(now)
        state.update(tx.read_rule_state(more))
    fired: dict[TP, list[Action]] = {}
    dirty: set[str] = set()
    expiry: dict[str, float] = {}
    for tp, at in sorted(now.items()):
        result = timers.due(tp, at, watermark, state)
        if result.actions:
            fired[tp] = list(result.actions)
        state.update(result.state_updates)
        dirty.update(result.state_updates)
        for key in result.state_updates:  # the last write of a row says when it expires
            expiry.pop(key, None)
        expiry.update(result.state_expiry)
    if dirty:
        tx.write_rule_state(
            {k: state[k] for k in dirty}, {k: expiry[k] for k in dirty if k in expiry}
        )
    return fired
