"""``trace``: an event's lineage, from what the store keeps: event → rules → actions →
attempts.

What is kept, and what it costs (docs/architecture.md, "Lineage"):

* the events and the actions they made: the checkpointed batches themselves, found by an
  event's id (the id index the pipeline keeps anyway), by ``topic/partition/offset``, or,
  for a key, a context or an action id nobody parked, by scanning the newest batches
  (``scan`` of them: a search, not an index, so the hot path pays nothing for it);
* each action's state (delivered, pending, dead), from the partition's watermark and the
  parked rows;
* its attempts worth telling: every failed attempt (with the error or the target's answer,
  trimmed) and the delivery that followed one; a first-try delivery keeps no row of its
  own, only the time of the first settle mark that covered it ("settled by"), written at
  most once a second per partition;
* why a rule did not fire is not stored: ``--why`` asks the rules of the config again
  (:mod:`connector.rules.explain`), which may have changed since.

All of it goes with the retention (``checkpoint.retention_days``), and attempts and marks
are capped in rows besides (``checkpoint.sql.LINEAGE_CAPS``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from checkpoint.base import ActionLineage, ActionState, OperationsStore, StoredBatch
from kec.action import Action
from kec.event import TP, Event, parse_coordinates

__all__ = ["DEFAULT_SCAN", "ActionTrace", "EventTrace", "TraceQuery", "engine_refs", "trace"]

DEFAULT_SCAN = 2_000  # batches a search by key, context or action id looks through
EngineRef = Callable[[Action], str | None]


@dataclass(frozen=True)
class TraceQuery:
    """One way of asking: exactly one of the fields (``namespace`` narrows the others)."""

    event_id: str | None = None  # an explicit id, or topic/partition/offset
    action_id: str | None = None
    key: str | None = None
    context: str | None = None
    namespace: str | None = None

    def __post_init__(self) -> None:
        given = [f for f in ("event_id", "action_id", "key", "context") if getattr(self, f)]
        if len(given) != 1:
            raise ValueError("ask by exactly one of: event id (or topic/partition/offset), "
                             "action id, key, context")  # fmt: skip


@dataclass(frozen=True)
class ActionTrace:
    """One action of an event, with what the store says of its delivery."""

    action: Action
    aseq: int
    lineage: ActionLineage
    engine_ref: str | None = None  # the engine's id for the run it started (if derivable)

    def to_dict(self) -> dict[str, Any]:
        a, lin = self.action, self.lineage
        return {
            "action_id": a.action_id,
            "rule": a.rule,
            "kind": a.kind.value,
            "target": a.target,
            "workflow": a.workflow,
            "task": a.task,
            "context": a.context,
            "event_ids": list(a.event_ids),
            "state": lin.state.value,
            "settled_by": lin.settled_by,
            "last_error": lin.last_error,
            "engine_ref": self.engine_ref,
            "attempts": [
                {
                    "n": t.n,
                    "at": t.at,
                    "target": t.target,
                    "outcome": t.outcome,
                    "detail": t.detail,
                }
                for t in lin.attempts
            ],
        }


@dataclass(frozen=True)
class EventTrace:
    """An event as checkpointed, the actions that name it, and (``--why``) each rule's
    verdict on it today."""

    event: Event
    stored_at: float
    actions: tuple[ActionTrace, ...] = ()
    verdicts: tuple[Any, ...] | None = None  # connector.rules.explain.Verdict

    def to_dict(self) -> dict[str, Any]:
        e = self.event
        found: dict[str, Any] = {
            "event": {
                "event_id": e.event_id,
                "key": e.key,
                "value": e.value if isinstance(e.value, str) else e.value.hex(),
                "namespace": e.namespace,
                "context": e.context,
                "sender": e.sender,
                "event_type": e.event_type,
                "create_time": e.create_time,
                "topic": e.topic,
                "partition": e.partition,
                "offset": e.offset,
                "checkpointed_at": self.stored_at,
            },
            "actions": [a.to_dict() for a in self.actions],
        }
        if self.verdicts is not None:
            found["rules"] = [v.to_dict() for v in self.verdicts]
        return found


@dataclass
class _Found:
    events: list[tuple[Event, StoredBatch]] = field(default_factory=list)
    actions: dict[str, tuple[TP, int, Action]] = field(default_factory=dict)


def trace(
    store: OperationsStore,
    query: TraceQuery,
    *,
    limit: int = 50,
    scan: int = DEFAULT_SCAN,
    engine_ref: EngineRef | None = None,
    why: Callable[[Event], Sequence[Any]] | None = None,
) -> list[EventTrace]:
    """The lineage of the events ``query`` names (newest first, at most ``limit``):
    ``engine_ref`` names an action's run in its engine (:func:`engine_refs`), ``why``
    gives each rule's verdict on an event (:func:`connector.rules.explain.explain`)."""
    found = _Found()
    if query.event_id:
        _by_event_id(store, query, found, scan)
    elif query.action_id:
        _by_action_id(store, query.action_id, found, scan)
    else:
        _by_search(store, query, found, limit, scan)
    events = found.events[:limit]
    located = [(tp, aseq, aid) for aid, (tp, aseq, _) in found.actions.items()]
    lineage = store.action_lineage(located)
    traces = []
    for event, batch in events:
        mine = [
            ActionTrace(action, aseq, lineage[aid], engine_ref(action) if engine_ref else None)
            for aid, (_, aseq, action) in found.actions.items()
            if event.event_id in action.event_ids
        ]
        verdicts = tuple(why(event)) if why is not None else None
        traces.append(EventTrace(event, batch.stored_at, tuple(mine), verdicts))
    return traces


def engine_refs(specs: Mapping[str, Any]) -> EngineRef:
    """How each target of ``specs`` (the config's target specs) names what an action
    started there: the Temporal workflow id, the Airflow dag_run_id, the webhook's
    Idempotency-Key, Prefect's idempotency key (whose deployment id only Prefect knows)."""
    from connector.config.targets import AirflowSpec, PrefectSpec, TemporalSpec, WebhookSpec
    from connector.targets.engine import idempotency_key, temporal_workflow_id
    from kec.action import ActionKind

    def ref(action: Action) -> str | None:
        spec = specs.get(action.target)
        started = action.kind is ActionKind.START_WORKFLOW
        if isinstance(spec, TemporalSpec) and started:
            return f"temporal workflow {temporal_workflow_id(spec.id_prefix, action)}"
        if isinstance(spec, AirflowSpec) and started:
            return f"airflow dag_run {idempotency_key(spec.run_id_prefix, action)}"
        if isinstance(spec, PrefectSpec) and started:
            return f"prefect idempotency key {spec.key_prefix}<deployment>:{action.action_id}"
        if isinstance(spec, WebhookSpec):
            return f"Idempotency-Key {action.action_id}"
        return None

    return ref


def _actions_of(batch: StoredBatch) -> list[tuple[TP, int, Action]]:
    return [(batch.tp, batch.first_aseq + i, a) for i, a in enumerate(batch.actions)]


def _add_actions(found: _Found, batch: StoredBatch, event_ids: set[str]) -> None:
    for tp, aseq, action in _actions_of(batch):
        if event_ids & set(action.event_ids):
            found.actions[action.action_id] = (tp, aseq, action)


def _event_in(batch: StoredBatch, offset: int) -> Event | None:
    return next((e for e in batch.events if e.offset == offset), None)


def _by_event_id(store: OperationsStore, query: TraceQuery, found: _Found, scan: int) -> None:
    assert query.event_id is not None
    coordinates = parse_coordinates(query.event_id)
    if coordinates is not None:
        topic, partition, offset = coordinates
        batch = store.batch_at((topic, partition), offset)
        event = _event_in(batch, offset) if batch is not None else None
    else:
        stored = store.get_event(query.event_id, query.namespace)
        batch = event = None
        if stored is not None and stored.topic is not None and stored.partition is not None:
            assert stored.offset is not None
            batch = store.batch_at((stored.topic, stored.partition), stored.offset)
            event = stored
    if event is None or batch is None:
        return
    found.events.append((event, batch))
    _add_actions(found, batch, {event.event_id})
    if not any(event.event_id in a.event_ids for _, _, a in found.actions.values()):
        # An all_of set's action is queued with its last event, maybe much later.
        _scan_for_actions(store, found, {event.event_id}, batch.seq, scan)


def _scan_for_actions(
    store: OperationsStore, found: _Found, event_ids: set[str], from_seq: int, scan: int
) -> None:
    # Newest first down to the event's own batch: the set completed after it.
    before: int | None = None
    seen = 0
    while seen < scan:
        batches = store.recent_batches(min(200, scan - seen), before)
        if not batches:
            return
        for batch in batches:
            if batch.seq <= from_seq:
                return
            _add_actions(found, batch, event_ids)
        seen += len(batches)
        before = batches[-1].seq


def _by_action_id(store: OperationsStore, action_id: str, found: _Found, scan: int) -> None:
    where = store.find_action(action_id, scan)
    if where is None:
        return
    tp, aseq = where
    batch = store.batch_of_action(tp, aseq)
    if batch is None:
        return
    action = batch.actions[aseq - batch.first_aseq]
    found.actions[action.action_id] = (tp, aseq, action)
    for event_id in action.event_ids:
        located = _locate(store, event_id, action.namespace)
        if located is not None:
            found.events.append(located)


def _locate(
    store: OperationsStore, event_id: str, namespace: str
) -> tuple[Event, StoredBatch] | None:
    event = store.get_event(event_id, namespace)
    if event is None or event.topic is None or event.partition is None or event.offset is None:
        return None
    batch = store.batch_at((event.topic, event.partition), event.offset)
    return (event, batch) if batch is not None else None


def _by_search(
    store: OperationsStore, query: TraceQuery, found: _Found, limit: int, scan: int
) -> None:
    def wanted(event: Event) -> bool:
        if query.namespace is not None and event.namespace != query.namespace:
            return False
        if query.key is not None:
            return event.key == query.key
        return event.context == query.context

    before: int | None = None
    seen = 0
    while seen < scan and len(found.events) < limit:
        batches = store.recent_batches(min(200, scan - seen), before)
        if not batches:
            return
        for batch in batches:
            hits = [e for e in reversed(batch.events) if wanted(e)]
            for event in hits:
                if len(found.events) < limit:
                    found.events.append((event, batch))
            _add_actions(found, batch, {e.event_id for e in hits})
        seen += len(batches)
        before = batches[-1].seq
    # A set's action may sit in a later batch than its event: look above the newest hit.
    orphans = {
        e.event_id
        for e, _ in found.events
        if not any(e.event_id in a.event_ids for _, _, a in found.actions.values())
    }
    if orphans and found.events:
        oldest = min(batch.seq for _, batch in found.events)
        _scan_for_actions(store, found, orphans, oldest, scan)


def states(traces: Sequence[EventTrace]) -> dict[str, int]:
    """How many actions of ``traces`` are in each state (for a summary line)."""
    counts = {s.value: 0 for s in ActionState}
    for t in traces:
        for a in t.actions:
            counts[a.lineage.state.value] += 1
    return counts
