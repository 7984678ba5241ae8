"""``event-connector partitions list|reset``: partitions stopped because Kafka's offsets
went backwards, and the operator's decision to read them on (:mod:`connector.ops.partitions`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from connector.commands.ops_cmds import _ops, connection_options


@click.group()
def partitions() -> None:
    """The store's partitions beside Kafka's; reset a stopped one."""


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@partitions.command("list")
@connection_options(store=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_cmd(ctx: click.Context, /, **kwargs: Any) -> None:
    """Every partition the store knows: owner and epoch, next offset, event time, Kafka's
    offsets and topic id, and why it is stopped when it is."""
    from connector.ops.partitions import list_partitions

    as_json = kwargs.pop("as_json")
    ops = _ops(ctx, kwargs)
    with ops.open_store() as store:
        views = list_partitions(ops.kafka(), store, list(ops.named_topics) or None)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "topic": v.info.tp[0],
                        "partition": v.info.tp[1],
                        "owner": v.info.owner,
                        "epoch": v.info.epoch,
                        "next_offset": v.info.next_offset,
                        "event_time": v.info.event_time,
                        "topic_id": v.info.topic_id,
                        "kafka_topic_id": v.topic_id,
                        "low": v.low,
                        "high": v.high,
                        "stopped": v.info.stopped,
                    }
                    for v in views
                ],
                indent=2,
            )
        )
        return
    if not views:
        click.echo("the store knows no partition yet")
        return
    for v in views:
        p = v.info
        kafka_side = "topic missing" if v.topic_id is None else f"Kafka {v.low}..{v.high}"
        click.echo(
            f"{p.tp[0]}[{p.tp[1]}]  owner {p.owner} (epoch {p.epoch})  next offset "
            f"{p.next_offset if p.next_offset is not None else '-'}  {kafka_side}  "
            f"event time {_when(p.event_time)}"
            + (f"\n    STOPPED: {p.stopped}" if p.stopped else "")
        )


@partitions.command("reset")
@connection_options(group=True, store=True)
@click.option(
    "--partition",
    "partition_ids",
    type=click.IntRange(0),
    multiple=True,
    help="A partition of the topic (repeatable) [every stopped one].",
)
@click.option(
    "--to",
    "to",
    default="earliest",
    show_default=True,
    metavar="earliest|latest|committed|OFFSET",
    help="Where to read on: Kafka's first offset, its end, the group's committed offset, "
    "or an offset.",
)
@click.option("--force", is_flag=True, help="Reset a partition that is not stopped.")
@click.pass_context
def reset(ctx: click.Context, /, **kwargs: Any) -> None:
    """Read a stopped partition on from Kafka's offsets, keeping everything the store holds.

    Give the topic with --topic. The connector that owns the partition resumes it within
    seconds; events and actions already in the store stay there (an explicit event id
    seen before is still a duplicate).
    """
    from connector.ops.partitions import reset_partitions

    partition_ids: tuple[int, ...] = kwargs.pop("partition_ids")
    to: str = kwargs.pop("to")
    force: bool = kwargs.pop("force")
    if to not in ("earliest", "latest", "committed") and not to.isdigit():
        raise click.BadParameter(
            f"{to!r}: earliest, latest, committed or an offset", param_hint="--to"
        )
    ops = _ops(ctx, kwargs)
    if len(ops.named_topics) != 1:
        raise click.UsageError("name the topic with --topic TOPIC (one)")
    with ops.open_store() as store:
        results = reset_partitions(
            ops.kafka(), ops.group_id, store, ops.named_topics[0],
            list(partition_ids) or None, to, force=force,
        )  # fmt: skip
    for r in results:
        was = r.before.stopped or "running"
        click.echo(
            f"{r.tp[0]}[{r.tp[1]}]: next offset {r.before.next_offset} -> {r.next_offset} "
            f"(Kafka {r.low}..{r.high}, topic id {r.topic_id}); was: {was}"
        )
