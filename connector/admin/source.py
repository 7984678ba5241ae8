"""What the admin API reads and changes, as plain data: one function per endpoint.

An :class:`AdminSource` is the running connector as the admin server sees it: its
config, its opened store, its numbers (:class:`~connector.metrics.core.Snapshot`) and
health, the :class:`~connector.admin.history.History` of the last minutes, and its
control (pause/resume, reload) when the run has one. In one process these are the
service's; with ``pipeline.processes`` above 1, the supervisor's (its children's numbers
merged, and the store the supervisor holds open).

Every function here blocks (the store): the routes run them in a worker thread. They
raise :class:`AdminError` with the HTTP status and short code to answer.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from checkpoint.base import ActionState
from connector.admin.history import History
from connector.admin.openapi import LINEAGE_PARAMS as LINEAGE_KEYS
from connector.metrics.core import Health, Snapshot, health_body
from connector.ops.dlq import action_dict, not_dead, record_dict, replay_actions
from kec.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from checkpoint.base import CheckpointStore
    from connector.config import ConnectorConfig

__all__ = ["KINDS", "LINEAGE_KEYS", "AdminError", "AdminSource"]

MAX_PAGE = 500
KINDS = ("rules", "targets")  # what pause/resume names (singular: rule, target)
_COUNT_CAP = 100_000  # dead records counted up to this many


class AdminError(ConnectorError):
    """A request the admin API refuses: ``status`` and ``code`` are the answer's."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def result_dict(result: Any) -> dict[str, Any]:
    """A reload's result as JSON: its ``to_dict()``, else its dataclass fields, and its
    one-line ``summary()`` when it has one."""
    if hasattr(result, "to_dict"):
        body: dict[str, Any] = dict(result.to_dict())
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        body = {
            f.name: list(v) if isinstance(v := getattr(result, f.name), tuple) else v
            for f in dataclasses.fields(result)
        }
    else:
        body = {}
    if callable(getattr(result, "summary", None)):
        body.setdefault("summary", result.summary())
    return body


def version() -> str:
    try:
        return importlib.metadata.version("kafka-event-connector")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def page_bounds(offset: str | None, limit: str | None, default: int = 50) -> tuple[int, int]:
    """``offset`` and ``limit`` query values, checked (422 when they are not numbers in range)."""
    try:
        start = int(offset) if offset is not None else 0
        count = int(limit) if limit is not None else default
    except ValueError as exc:
        raise AdminError(422, "invalid_query", "offset and limit must be integers") from exc
    if start < 0 or not 1 <= count <= MAX_PAGE:
        raise AdminError(
            422, "invalid_query", f"offset must be >= 0 and limit between 1 and {MAX_PAGE}"
        )
    return start, count


@dataclass
class AdminSource:
    """The running connector, for the admin API (see the module docstring)."""

    config: ConnectorConfig
    store: CheckpointStore
    snapshot: Callable[[], Snapshot]
    health: Callable[[], Health]
    instance: str
    control: Callable[[], Any] = field(default=lambda: None)
    history: History = field(init=False)
    started: float = field(default_factory=time.time)
    secured: bool = False  # a token is required (the console shows its log-out button)

    def __post_init__(self) -> None:
        self.history = History(self.snapshot)

    def running_config(self) -> ConnectorConfig:
        """The config running now: the control's after a reload, else the one run began
        with."""
        try:
            control = self.control()
        except Exception:
            control = None
        current = getattr(control, "config", None) if control is not None else None
        return current if current is not None else self.config

    # -- reads -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        code, health = health_body(self.health())
        snap = self.snapshot()
        return {
            "status": health["status"],
            "ready": code == 200,
            "checks": health["checks"],
            "version": version(),
            "instance": self.instance,
            "group_id": self.config.group_id,
            "uptime_seconds": round(time.time() - self.started, 1),
            "processes": self.config.pipeline.processes,
            "outbox": {
                "pending": self.store.count_actions(ActionState.PENDING),
                "dead": self.store.count_actions(ActionState.DEAD),
            },
            "totals": {
                key: snap.get(key)
                for key in (
                    "records",
                    "events",
                    "actions_queued",
                    "actions_delivered",
                    "actions_failed",
                    "actions_dead",
                    "dead_records",
                )
            },
        }

    def partitions(self) -> list[dict[str, Any]]:
        """Every partition the store knows: owner, epoch, next offset, and the lag this
        instance measured (None for partitions another instance reads)."""
        lag = self.snapshot().lag
        rows = []
        for p in sorted(self.store.partitions(), key=lambda p: p.tp):
            rows.append(
                {
                    "topic": p.tp[0],
                    "partition": p.tp[1],
                    "owner": p.owner,
                    "epoch": p.epoch,
                    "next_offset": p.next_offset,
                    "lag": lag.get(p.tp),
                    "stopped": p.stopped,
                    "event_time_ms": p.event_time,
                }
            )
        return rows

    def rules(self) -> list[dict[str, Any]]:
        """The configured rules, how many actions each queued (since the store began, and
        in this run), and whether it is paused; rules of the store no longer configured
        come last."""
        fired = self.store.count_actions_by_rule()
        this_run = self.snapshot().queued_by_rule
        paused = self._paused("rules")
        config = self.running_config()
        rows: list[dict[str, Any]] = []
        for rule in config.rules:
            rows.append(
                {
                    "name": rule.name,
                    "namespace": rule.namespace,
                    "target": rule.target or "log",
                    "action": rule.action.value,
                    "fired": fired.get(rule.name, 0),
                    "fired_this_run": this_run.get(rule.name, 0),
                    "paused": rule.name in paused,
                    "configured": True,
                }
            )
        known = {r.name for r in config.rules}
        for name in sorted(set(fired) - known):
            rows.append(
                {"name": name, "namespace": None, "target": None, "action": None,
                 "fired": fired[name], "fired_this_run": this_run.get(name, 0),
                 "paused": name in paused, "configured": False}
            )  # fmt: skip
        return rows

    def targets(self) -> list[dict[str, Any]]:
        snap = self.snapshot()
        paused = self._paused("targets")
        return [
            {
                "name": name,
                "type": spec.type,
                "health": "paused" if name in paused else self.history.target_health(name),
                "delivered": snap.delivered_by_target.get(name, 0),
                "failed": snap.failed_by_target.get(name, 0),
                "dead": snap.dead_by_target.get(name, 0),
                "paused": name in paused,
            }
            for name, spec in self.running_config().targets.items()
        ]

    def dead_letters(self, offset: int, limit: int) -> dict[str, Any]:
        """A page of the dead actions and one of the dead records (the same window)."""
        actions = self.store.list_actions(ActionState.DEAD, limit=offset + limit)[offset:]
        records = self.store.list_dead_records(limit=offset + limit)[offset:]
        return {
            "offset": offset,
            "limit": limit,
            "total_actions": self.store.count_actions(ActionState.DEAD),
            "total_records": len(self.store.list_dead_records(limit=_COUNT_CAP)),
            "actions": [action_dict(e) for e in actions],
            "records": [record_dict(r) for r in records],
        }

    def history_series(self) -> dict[str, Any]:
        return self.history.series()

    def lineage(self, query: Mapping[str, str], limit: int) -> dict[str, Any]:
        """``connector.ops.trace.trace`` for exactly one of :data:`LINEAGE_KEYS`
        (``coordinates``, ``topic/partition/offset``, is asked as an event id; ``namespace``
        narrows the others)."""
        given = {k: v for k, v in query.items() if k in LINEAGE_KEYS and v}
        if len(given) != 1:
            raise AdminError(400, "invalid_query", f"give exactly one of {', '.join(LINEAGE_KEYS)}")
        from connector.ops import trace as trace_module

        ((field_, value),) = given.items()
        asked = {"event_id" if field_ == "coordinates" else field_: value}
        if query.get("namespace"):
            asked["namespace"] = query["namespace"]
        engine_ref = trace_module.engine_refs(self.running_config().targets)
        try:
            query_ = trace_module.TraceQuery(**asked)
            found = trace_module.trace(self.store, query_, limit=limit, engine_ref=engine_ref)
        except (TypeError, ValueError, ConfigError) as exc:  # not a query trace() takes
            raise AdminError(400, "invalid_query", str(exc)) from exc
        return {"query": {**given, **asked}, "traces": [t.to_dict() for t in found]}

    # -- changes ---------------------------------------------------------------------------

    def replay(self, action_id: str) -> dict[str, Any]:
        """Put one dead action back as a due retry (as ``dlq replay ID``): 404 when it is
        not dead (unknown, delivered, or replayed already)."""
        if not_dead(self.store, [action_id]):
            raise AdminError(404, "not_found", f"no dead action {action_id!r}")
        moved = replay_actions(self.store, [action_id])
        if moved == 0:  # replayed by someone else meanwhile
            raise AdminError(404, "not_found", f"no dead action {action_id!r}")
        return {"action_id": action_id, "replayed": moved}

    def pause(self, kind: str, name: str, *, resume: bool = False) -> dict[str, Any]:
        control = self._control()
        self._known(kind, name)
        singular = kind[:-1]
        try:
            (control.resume if resume else control.pause)(singular, name)
        except (KeyError, ValueError, ConnectorError) as exc:
            raise AdminError(400, "refused", str(exc)) from exc
        return {"kind": singular, "name": name, "paused": not resume}

    def reload(self) -> dict[str, Any]:
        control = self._control()
        try:
            result = control.reload()
        except ConnectorError as exc:
            raise AdminError(400, "reload_failed", str(exc)) from exc
        return result_dict(result)

    # -- helpers ---------------------------------------------------------------------------

    def _control(self) -> Any:
        control = self.control()
        if control is None:
            raise AdminError(501, "not_implemented", "this run has no control of its rules")
        return control

    def _known(self, kind: str, name: str) -> None:
        config = self.running_config()
        names: Iterable[str] = [r.name for r in config.rules] if kind == "rules" else config.targets
        if name not in names:
            raise AdminError(404, "not_found", f"no {kind[:-1]} {name!r} is configured")

    def _paused(self, kind: str) -> set[str]:
        """The names of ``kind`` the control reports paused (none without a control)."""
        try:
            control = self.control()
            found = control.paused() if control is not None else None
        except Exception:
            return set()
        if not found:
            return set()
        singular = kind[:-1]
        if isinstance(found, Mapping):
            names = found.get(kind) or found.get(singular) or ()
            return {str(n) for n in names}
        out: set[str] = set()
        for item in found:
            if isinstance(item, tuple) and len(item) == 2 and item[0] in (kind, singular):
                out.add(str(item[1]))
        return out
