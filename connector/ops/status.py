"""``status``: where each partition stands, what the outbox holds, what each rule did.

Per partition, three offsets that the exactly-once protocol (docs/architecture.md) keeps in
order: ``committed`` (the group's Kafka commit) <= ``stored`` (the checkpoint store's next
offset, the source of truth) <= ``end`` (the high watermark). ``lag`` is ``end - stored``;
a partition the store has not seen yet counts from its low watermark (all of it unread).

Per partition also its owner in the store (the instance that claimed it last, and the
owner epoch), and for the group Kafka's view: its state and how many members it has, so
``status`` says whether a connector holds the group now.

Reading committed offsets and describing the group do not join it, so ``status`` is safe
beside a running connector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from checkpoint.base import ActionState, OperationsStore
from connector.ops.kafka_io import (
    committed_offsets,
    partitions_of,
    watermarks,
)
from kec import kafka

log = logging.getLogger(__name__)

# The retrying count scans pending actions; past this many it is left out (None).
RETRY_SCAN_LIMIT = 10_000
DEAD_RECORD_LIMIT = 1_000_000


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    committed: int | None
    stored: int | None
    end: int
    lag: int
    owner: str | None = None  # the instance that claimed it last (its owner epoch)
    epoch: int | None = None
    stopped: str | None = None  # why its owner stopped it (offsets that went backwards)


@dataclass(frozen=True)
class StatusReport:
    group_id: str
    partitions: list[PartitionStatus]
    pending: int
    retrying: int | None  # pending actions that already failed at least once
    done: int
    dead_actions: int
    dead_records: int
    rules: dict[str, int] = field(default_factory=dict)  # rule -> actions queued
    group_state: str | None = None  # Kafka's view of the group: STABLE, EMPTY, ...
    members: int | None = None  # consumers in the group now

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_lag"] = self.total_lag
        return data


def _committed(
    connection: kafka.Connection, group_id: str, tps: list[tuple[str, int]]
) -> dict[tuple[str, int], int | None]:
    # committed() answers for the consumer's own group id; it never subscribes, so this
    # consumer does not join the group.
    # The connector's group, read not joined: committed() only, nothing subscribes.
    consumer = kafka.consumer(connection.with_properties({"group.id": group_id}))
    try:
        return committed_offsets(consumer, tps)
    finally:
        consumer.close()


def collect_status(
    connection: kafka.Connection,
    group_id: str,
    topics: Sequence[str],
    store: OperationsStore,
    rule_names: Sequence[str] = (),
) -> StatusReport:
    """Read Kafka and the (opened) store; configured rules that never fired count 0."""
    consumer = kafka.reader(connection, "status")
    try:
        tps = partitions_of(consumer, topics)
        committed = _committed(connection, group_id, tps)
        stored: dict[tuple[str, int], int] = {}
        for topic in topics:
            stored.update(store.next_offsets(topic))
        owners = {p.tp: p for p in store.partitions()}
        rows = []
        for tp in tps:
            low, high = watermarks(consumer, tp)
            at = stored.get(tp)
            lag = max(0, high - (at if at is not None else low))
            row = owners.get(tp)
            status = PartitionStatus(
                tp[0], tp[1], committed.get(tp), at, high, lag,
                row.owner if row else None, row.epoch if row else None,
                row.stopped if row else None,
            )  # fmt: skip
            rows.append(status)
    finally:
        consumer.close()
    state, members = _group(connection, group_id)
    pending = store.count_actions(ActionState.PENDING)
    retrying: int | None = None
    if pending <= RETRY_SCAN_LIMIT:
        scan = store.list_actions(ActionState.PENDING, limit=RETRY_SCAN_LIMIT)
        retrying = sum(1 for entry in scan if entry.attempts > 0)
    fired = store.count_actions_by_rule()
    rules = {name: fired.get(name, 0) for name in rule_names}
    rules.update({name: n for name, n in sorted(fired.items()) if name not in rules})
    return StatusReport(
        group_id=group_id,
        partitions=rows,
        pending=pending,
        retrying=retrying,
        done=store.count_actions(ActionState.DONE),
        dead_actions=store.count_actions(ActionState.DEAD),
        dead_records=len(store.list_dead_records(limit=DEAD_RECORD_LIMIT)),
        rules=rules,
        group_state=state,
        members=members,
    )


def _group(connection: kafka.Connection, group_id: str) -> tuple[str | None, int | None]:
    """Kafka's view of the connector's group: its state and how many members it has."""
    admin = kafka.admin(connection)
    try:
        found = admin.describe_consumer_groups([group_id], request_timeout=10)[group_id]
        description = found.result(timeout=15)
    except Exception as exc:
        log.warning("status: cannot describe group %s: %s", group_id, exc)
        return None, None
    state = getattr(description.state, "name", str(description.state))
    return state, len(description.members)


def render_status(report: StatusReport, console: Console) -> None:
    """The partition table, an outbox line and the rules table (rich)."""
    held = (
        f"{report.group_state}, {report.members} member(s)"
        if report.group_state is not None
        else "state unknown"
    )
    table = Table(title=f"group {report.group_id} ({held})")
    for column in ("topic", "partition", "committed", "store", "end", "lag", "owner"):
        table.add_column(column, justify="left" if column in ("topic", "owner") else "right")
    for p in report.partitions:
        table.add_row(
            p.topic,
            str(p.partition),
            "-" if p.committed is None else str(p.committed),
            "-" if p.stored is None else str(p.stored),
            str(p.end),
            str(p.lag),
            ("-" if p.owner is None else f"{p.owner} (epoch {p.epoch})")
            + (" STOPPED" if p.stopped else ""),
        )
    console.print(table)
    for p in report.partitions:
        if p.stopped:
            console.print(
                f"{p.topic}[{p.partition}] is STOPPED: {p.stopped} "
                "(event-connector partitions reset decides)"
            )
    retrying = "?" if report.retrying is None else str(report.retrying)
    console.print(
        f"outbox: {report.pending} pending ({retrying} retrying), {report.done} done, "
        f"{report.dead_actions} dead; dead records: {report.dead_records}; "
        f"total lag: {report.total_lag}"
    )
    if report.rules:
        rules = Table(title="rules")
        rules.add_column("rule")
        rules.add_column("actions", justify="right")
        for name, fired in report.rules.items():
            rules.add_row(name, str(fired))
        console.print(rules)
