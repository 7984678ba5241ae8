"""Operator commands: ``send``, ``tail``, ``status``, ``replay``, ``dlq list|replay``.

Thin wrappers over :mod:`connector.ops`: every command takes ``-c/--config FILE`` or the
explicit connection options it uses, and no other (``--bootstrap`` and ``--topic`` for
those that talk to Kafka, ``--group`` for ``status``, ``--store`` for those that read the
store), resolved in ONE place, :func:`resolve`. Explicit options given on the command
line win over the file. Exit codes: 0 ok, 2 usage or configuration error, 1 runtime
failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from connector.commands import data_dir_option, refuse_data_dir_without_config, stop_on_signals
from connector.common.redaction import redact_logs
from connector.ops.context import OpsContext
from connector.ops.trace import DEFAULT_SCAN
from kec.kafka.settings import Connection

if TYPE_CHECKING:
    from rich.progress import Progress

    from connector.ops.trace import EventTrace

_DEFAULT_GROUP = "event-connector"
_DEFAULT_STORE = "sqlite://checkpoints.db"


def _parse_topics(specs: tuple[str, ...]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for spec in specs:
        topic, _, namespace = spec.partition("=")
        if not topic:
            raise click.UsageError(f"--topic {spec!r}: the topic name is empty")
        mapping[topic] = namespace or "default"
    return mapping


def resolve(
    ctx: click.Context,
    config: str | None,
    bootstrap: str | None,
    group: str | None,
    store: str | None,
    topics: tuple[str, ...],
    *,
    needs_kafka: bool = True,
    data_dir: Path | None = None,
) -> OpsContext:
    """Merge ``-c FILE`` and the explicit options (the command line wins, the env does not).

    ``needs_kafka=False`` (the ``dlq`` commands, which only read the store) lets
    ``--bootstrap`` be left out.
    """
    explicit = _parse_topics(topics)
    if config is None:
        if not bootstrap and needs_kafka:
            raise click.UsageError(
                "give -c/--config FILE, or --bootstrap (env KAFKA_BOOTSTRAP_SERVERS)"
            )
        return OpsContext(
            connection=Connection(bootstrap) if bootstrap else None,
            group_id=group or _DEFAULT_GROUP,
            topics=explicit,
            store_url=store or _DEFAULT_STORE,
            named_topics=tuple(explicit),
            source=f"--bootstrap {bootstrap}",
            store_origin=_store_origin(store, None),
        )
    from connector.assembly import record_formats
    from connector.config import load_config
    from connector.topics import policy_of

    cfg = load_config(config, data_dir=data_dir)
    redact_logs(cfg.secrets())
    connection = cfg.kafka.connection()
    if bootstrap and ctx.get_parameter_source("bootstrap") is ParameterSource.COMMANDLINE:
        connection = Connection(bootstrap, connection.properties)
    configured: dict[str, str] = dict(cfg.topics())
    rules = list(cfg.rules)
    return OpsContext(
        connection=connection,
        group_id=group or cfg.group_id,
        topics={**configured, **{t: ns for t, ns in explicit.items() if t not in configured}},
        store_url=store or cfg.checkpoint.url(),
        named_topics=tuple(explicit),
        rules=rules,
        dead_letter_topic=cfg.dead_letter_topic,
        rule_names=tuple(rule.name for rule in rules),
        topic_policy=policy_of(cfg),
        source=f"-c {config}",
        match_limits=cfg.pipeline.match_limits(),
        store_origin=_store_origin(store, (config, cfg.checkpoint.backend)),
        gateway_topic=cfg.http.topic if cfg.http is not None else None,
        formats=record_formats(cfg),
        targets=dict(cfg.targets),
        max_event_bytes=cfg.pipeline.max_event_bytes,
    )


def _store_origin(store: str | None, config: tuple[str, str] | None) -> tuple[str, str]:
    """Where the store URL came from, and what to change when no store is there."""
    if store is not None:
        return "--store", "check --store, or give -c FILE"
    if config is None:
        return "no -c or --store given", "give -c FILE (the connector's config) or --store URL"
    path, backend = config
    setting = "checkpoint.path" if backend == "sqlite" else "checkpoint.dsn"
    return (
        f"{setting} of {path}",
        "a connector running with this config creates it; or give --store URL",
    )


_TOPIC_HELP = {
    "many": "A topic of the connector (repeatable); with -c, only these of the file's.",
    "replay": "A topic to replay (repeatable) [with -c: every topic of the file; with -c and "
    "--topic: that one of them].",
    "send": "The topic to send to, =NAMESPACE its namespace [the topic of --namespace in "
    "-c FILE, or of its only namespace].",
}


def connection_options(
    *, kafka: bool = True, group: bool = False, store: bool = False, topics: str | None = "many"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-c`` and those explicit connection options the command uses (none it ignores).

    ``kafka``: ``--bootstrap``; ``group``: ``--group`` (the connector's consumer group);
    ``store``: ``--store`` and ``--data-dir``; ``topics``: ``--topic``, repeatable
    (``"many"``, ``"replay"``) or once (``"send"``), or not offered (None).
    """
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "-c",
            "--config",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="Connector config file (YAML); the options below override it.",
        )
    ]
    if kafka:
        options.append(
            click.option(
                "--bootstrap",
                envvar="KAFKA_BOOTSTRAP_SERVERS",
                default=None,
                metavar="HOST:PORT",
                help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS); on the command "
                "line it replaces the file's.",
            )
        )
    if group:
        options.append(
            click.option(
                "--group",
                default=None,
                metavar="NAME",
                help=f"Consumer group of the connector [-c FILE's; else {_DEFAULT_GROUP}].",
            )
        )
    if store:
        options.append(
            click.option(
                "--store",
                default=None,
                metavar="URL",
                help=f"Checkpoint store URL [-c FILE's; else {_DEFAULT_STORE}].",
            )
        )
    if store:
        options.append(data_dir_option)
    if topics is not None:
        options.append(
            click.option(
                "--topic",
                "topics",
                multiple=topics != "send",
                metavar="TOPIC[=NAMESPACE]",
                help=_TOPIC_HELP[topics],
            )
        )

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _ops(ctx: click.Context, kwargs: dict[str, Any], *, needs_kafka: bool = True) -> OpsContext:
    topics = kwargs.pop("topics", ())
    data_dir = kwargs.pop("data_dir", None)
    if data_dir is not None:
        refuse_data_dir_without_config(ctx, kwargs["config"])
    return resolve(
        ctx,
        kwargs.pop("config"),
        kwargs.pop("bootstrap", None),
        kwargs.pop("group", None),
        kwargs.pop("store", None),
        (topics,) if isinstance(topics, str) else tuple(topics or ()),
        needs_kafka=needs_kafka,
        data_dir=data_dir,
    )


def _reach(ops: OpsContext) -> None:
    """Fail early, in one line saying why, when Kafka cannot be reached."""
    from kec.kafka import reach

    reach(ops.kafka())


def _progress(enabled: bool | None) -> Progress | None:
    """A rich progress bar on stderr: when asked, or by default when stderr is a TTY."""
    if enabled is False or (enabled is None and not sys.stderr.isatty()):
        return None
    from rich.console import Console
    from rich.progress import Progress

    return Progress(console=Console(stderr=True), transient=False)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))


# -- send ------------------------------------------------------------------------------


@click.command()
@click.argument("key")
@click.argument("value")
@connection_options(topics="send")
@click.option("--namespace", default=None, help="Namespace of the events [the topic's].")
@click.option("--sender", default=None, help="Sender recorded in the events.")
@click.option("--context", default=None, help="Workflow execution the events belong to.")
@click.option("--count", type=click.IntRange(1), default=1, show_default=True)
@click.option("--same-value", is_flag=True, help="With --count, do not suffix values with -i.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many events per second.",
)
@click.option(
    "--create-topic/--no-create-topic",
    default=None,
    help="Create the topic when it is missing [the file's topic_creation.enabled; without "
    "-c: create].",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [when a TTY].")
@click.pass_context
def send(ctx: click.Context, /, key: str, value: str, **kwargs: Any) -> None:
    """Send COUNT events KEY=VALUE to a namespace's topic (idempotent, acks=all).

    The topic is --topic, else the topic of --namespace in the config (or of its only
    namespace). A missing topic is created (partitions and replication from the file's
    topic_creation) unless creation is off; then the error names the topic and how to
    create it. With --count, values become VALUE-0, VALUE-1... (unless --same-value);
    every event has its own id. Ctrl-C stops sending and reports how many were sent.
    """
    from connector.ops.send import make_events, send_events, topic_for
    from connector.topics import TopicPolicy, ensure_topics

    ops = _ops(ctx, kwargs)
    destination = ops.named_topics[0] if ops.named_topics else None
    candidates = ops.topics
    if kwargs["namespace"] is None and destination is None:  # the gateway's: only when named
        candidates = {t: ns for t, ns in ops.topics.items() if t != ops.gateway_topic}
    topic, namespace = topic_for(candidates, kwargs["namespace"], destination)
    policy = ops.topic_policy or TopicPolicy()
    if kwargs["create_topic"] is not None:
        policy = dataclasses.replace(policy, create=kwargs["create_topic"])
    ensure_topics(ops.kafka(), [topic], policy, source=ops.source)
    count: int = kwargs["count"]
    events = make_events(
        key,
        value,
        namespace=namespace,
        sender=kwargs["sender"],
        context=kwargs["context"],
        count=count,
        same_value=kwargs["same_value"],
    )
    progress = _progress(kwargs["progress"])
    with stop_on_signals() as stop, progress if progress is not None else contextlib.nullcontext():
        on_sent = None
        if progress is not None:
            task = progress.add_task(f"sending to {topic}", total=count)
            on_sent = lambda n: progress.advance(task, n)  # noqa: E731
        report = send_events(
            ops.kafka(),
            topic,
            events,
            rate=kwargs["rate"],
            on_sent=on_sent,
            sleep=stop.wait,
            stop=stop,
        )
    if count == 1 and report.positions:
        partition, offset = report.positions[0]
        click.echo(f"{topic}[{partition}]@{offset}")
    if report.interrupted:
        click.echo(
            f"interrupted: sent {report.count} of {_plural(count, 'event')} to {topic} "
            f"in {report.seconds:.2f}s"
        )
        ctx.exit(130)
    click.echo(f"sent {_plural(report.count, 'event')} to {topic} in {report.seconds:.2f}s")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# -- tail ------------------------------------------------------------------------------


@click.command()
@connection_options()
@click.option("--namespace", default=None, help="Only the topics of this namespace.")
@click.option("--key", "key_glob", default=None, metavar="GLOB", help="Only keys matching GLOB.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record, not the end.")
@click.option(
    "--max", "max_events", type=click.IntRange(1), default=None, help="Stop after this many events."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON event per line.")
@click.pass_context
def tail(ctx: click.Context, /, **kwargs: Any) -> None:
    """Print the connector's events as they arrive (time, namespace, key, value, context).

    Reads without joining the connector's group and commits nothing. Stops on Ctrl-C,
    SIGTERM or after --max events.
    """
    from connector.ops.tail import TailOptions, format_json, format_line, tail_events

    ops = _ops(ctx, kwargs)
    topics = dict(ops.topics)
    if ops.named_topics:
        topics = {t: ns for t, ns in topics.items() if t in ops.named_topics}
    namespace = kwargs["namespace"]
    if namespace is not None:
        topics = {t: ns for t, ns in topics.items() if ns == namespace}
    if not topics:
        raise click.UsageError("no topic to tail: give -c FILE or --topic (and a known namespace)")
    fmt = format_json if kwargs["as_json"] else format_line
    _reach(ops)
    options = TailOptions(kwargs["key_glob"], kwargs["from_beginning"], kwargs["max_events"])
    with stop_on_signals() as stop:
        tail_events(
            ops.kafka(),
            topics,
            options,
            lambda event: click.echo(fmt(event)),
            stop,
            on_undecodable=lambda note: click.echo(note, err=True),
            formats=ops.formats,
            on_ready=lambda: click.echo(
                f"tailing {', '.join(sorted(topics))}"
                f"{' from the beginning' if options.from_beginning else ''}; Ctrl-C stops",
                err=True,
            ),
        )


# -- trace -----------------------------------------------------------------------------


@click.command()
@click.argument("event", required=False, metavar="[EVENT_ID | TOPIC/PARTITION/OFFSET]")
@connection_options(kafka=False, store=True, topics=None)
@click.option("--action", "action_id", default=None, metavar="ID", help="By action id.")
@click.option("--key", default=None, help="The newest events of this key.")
@click.option("--context", default=None, help="The newest events of this workflow execution.")
@click.option("--namespace", default=None, help="Only events of this namespace.")
@click.option("--why", is_flag=True, help="Also each rule's verdict on the event (today's rules).")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True,
              help="At most this many events.")  # fmt: skip
@click.option(
    "--scan",
    type=click.IntRange(1),
    default=DEFAULT_SCAN,
    show_default=True,
    help="Batches a search by --key, --context or --action looks through, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the lineage as JSON.")
@click.pass_context
def trace(ctx: click.Context, /, event: str | None, **kwargs: Any) -> None:
    """An event's lineage: the event as checkpointed, the actions it made, each one's
    state and its delivery attempts, and with --why each rule's verdict on it.

    Ask by event id (or TOPIC/PARTITION/OFFSET), by --action ID, or search the newest
    events of a --key or a --context. Reads the checkpoint store only. Failed attempts
    keep their error; a first-try delivery keeps the time it was settled by.
    """
    from connector.ops.trace import TraceQuery, engine_refs
    from connector.ops.trace import trace as run_trace

    asked = {"event_id": event, "action_id": kwargs.pop("action_id"),
             "key": kwargs.pop("key"), "context": kwargs.pop("context")}  # fmt: skip
    if sum(1 for v in asked.values() if v) != 1:
        raise click.UsageError("give one of: EVENT_ID (or TOPIC/PARTITION/OFFSET), --action, "
                               "--key, --context")  # fmt: skip
    query = TraceQuery(namespace=kwargs.pop("namespace"), **asked)
    why_asked, as_json = kwargs.pop("why"), kwargs.pop("as_json")
    limit, scan = kwargs.pop("limit"), kwargs.pop("scan")
    ops = _ops(ctx, kwargs, needs_kafka=False)
    why = None
    if why_asked:
        if ops.rules is None:
            raise click.UsageError("--why needs -c FILE (the rules to ask)")
        from connector.rules.explain import explain

        rules, limits = ops.rules, ops.match_limits
        why = lambda e: explain(rules, e, limits)  # noqa: E731
    with ops.open_store() as store:
        traces = run_trace(
            store, query, limit=limit, scan=scan, engine_ref=engine_refs(ops.targets), why=why
        )
    if as_json:
        _echo_json([t.to_dict() for t in traces])
    else:
        for line in trace_lines(traces):
            click.echo(line)
    if not traces:
        ctx.exit(1)


def trace_lines(traces: Sequence[EventTrace]) -> list[str]:
    """The lineage as indented lines (what ``trace`` prints without --json)."""
    if not traces:
        return ["no such event in the store (pruned by the retention, or never checkpointed)"]
    lines: list[str] = []
    for t in traces:
        e = t.event
        lines.append(
            f"event {e.event_id}  key={e.key}  namespace={e.namespace}"
            + (f"  context={e.context}" if e.context else "")
            + f"  at {e.topic}/{e.partition}/{e.offset}, checkpointed {_when(t.stored_at)}"
        )
        value = e.value if isinstance(e.value, str) else f"<{len(e.value)} bytes>"
        lines.append(f"  value: {value if len(value) <= 200 else value[:197] + '...'}")
        if not t.actions:
            lines.append("  no action")
        for a in t.actions:
            act, lin = a.action, a.lineage
            what = act.kind.value + (f" {act.workflow}" if act.workflow else "")
            what += f" task {act.task}" if act.task else ""
            state = lin.state.value
            if lin.settled_by is not None:
                state += f", settled by {_when(lin.settled_by)}"
            lines.append(f"  action {act.action_id}  {what}  rule {act.rule} -> {act.target}: "
                         f"{state}")  # fmt: skip
            if a.engine_ref:
                lines.append(f"    {a.engine_ref}")
            for at in lin.attempts:
                detail = f": {at.detail}" if at.detail else ""
                lines.append(f"    attempt {at.n} {_when(at.at)} {at.outcome}{detail}")
            if lin.state.value == "dead" and lin.last_error and not lin.attempts:
                lines.append(f"    last error: {lin.last_error}")
        for v in t.verdicts or ():
            lines.append(f"  rule {v.rule}: {v.verdict}, {v.reason}")
    return lines


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# -- status ----------------------------------------------------------------------------


@click.command()
@connection_options(group=True, store=True)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, /, **kwargs: Any) -> None:
    """Per-partition offsets (Kafka committed, store checkpoint, end, lag), the outbox,
    dead letters and how many actions each rule queued."""
    from connector.ops.status import collect_status, render_status

    ops = _ops(ctx, kwargs)
    if not ops.topics:
        raise click.UsageError("no topics: give -c FILE or --topic")
    topics = list(ops.named_topics) if ops.named_topics else list(ops.topics)
    with ops.open_store() as store:
        _reach(ops)
        report = collect_status(ops.kafka(), ops.group_id, topics, store, ops.rule_names)
    if kwargs["as_json"]:
        _echo_json(report.to_dict())
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped: do not squeeze topic names to 80 columns
    render_status(report, console)


# -- replay ----------------------------------------------------------------------------


def _parse_time(text: str) -> int:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # a time without zone is UTC, like Kafka's clock
    return int(when.timestamp() * 1000)


@click.command()
@connection_options(store=True, topics="replay")
@click.option("--from-offset", type=click.IntRange(0), default=None, help="Start offset.")
@click.option(
    "--from-time",
    default=None,
    metavar="ISO8601",
    help="Start at the first record at or after this time (default zone UTC).",
)
@click.option("--partition", type=click.IntRange(0), default=None, help="Only this partition.")
@click.option("--batch-size", type=click.IntRange(1), default=500, show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar [when a TTY].")
@click.pass_context
def replay(ctx: click.Context, /, **kwargs: Any) -> None:
    """Evaluate a range of checkpointed records again with the rules as they are now.

    For a rule that was missing or wrong when the events came: it fires now. Actions
    queued before are not queued again (an action id is its rule and its events), so a
    second replay queues nothing. Records the connector has not checkpointed yet are left
    to it. Offsets, commits and all_of sets are left untouched.
    """
    from connector.ops.replay import ReplayRange
    from connector.ops.replay import replay as run_replay

    ops = _ops(ctx, kwargs)
    if (kwargs["from_offset"] is None) == (kwargs["from_time"] is None):
        raise click.UsageError("give exactly one of --from-offset and --from-time")
    if not ops.topics:
        raise click.UsageError("no topics: give -c FILE or --topic")
    if ops.rules is not None and len(ops.named_topics) > 1:
        raise click.UsageError("with -c, give at most one --topic (of the file's) to replay")
    selected = ops.named_topics[0] if ops.rules is not None and ops.named_topics else None
    span = ReplayRange(
        from_offset=kwargs["from_offset"],
        from_time_ms=None if kwargs["from_time"] is None else _parse_time(kwargs["from_time"]),
        partition=kwargs["partition"],
        topic=selected,
    )
    progress = _progress(kwargs["progress"])
    with ops.open_store() as store, progress if progress is not None else contextlib.nullcontext():
        _reach(ops)
        on_progress = None
        if progress is not None:
            task = progress.add_task("replaying", total=None)
            on_progress = lambda done, total: progress.update(task, completed=done, total=total)  # noqa: E731
        report = run_replay(
            ops.kafka(),
            ops.topics,
            store,
            ops.evaluator(),
            span,
            batch_size=kwargs["batch_size"],
            on_progress=on_progress,
            formats=ops.formats,
            max_bytes=ops.max_event_bytes,
        )
    click.echo(
        f"replayed {report.partitions} partitions: read {report.read}, "
        f"evaluated again {report.evaluated}, duplicates {report.duplicates}, "
        f"undecodable {report.undecodable}, "
        + (f"rules failed {report.rule_failures}, " if report.rule_failures else "")
        + f"actions queued {report.actions} ({report.known} queued before)"
        + (
            f"; {report.unread} records not checkpointed yet, left to the pipeline"
            if report.unread
            else ""
        )
    )
    for (topic, partition), why in sorted(report.held_back.items()):
        click.echo(f"not replayed: {topic}[{partition}]: {why}")
    if report.left_out:
        click.echo(
            f"not replayed: the all_of rule(s) {', '.join(report.left_out)}: what a set fires "
            "depends on the events that came before each one, which a replay cannot restore"
        )


# -- dlq -------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Dead letters: dead actions (replayable) and undecodable records (listed only)."""


@dlq.command("list")
@connection_options(kafka=False, store=True, topics=None)
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON.")
@click.pass_context
def dlq_list(ctx: click.Context, /, **kwargs: Any) -> None:
    """List dead actions and dead (undecodable) records from the checkpoint store."""
    from connector.ops.dlq import list_dlq

    ops = _ops(ctx, kwargs, needs_kafka=False)
    with ops.open_store() as store:
        listing = list_dlq(store, kwargs["limit"])
    if kwargs["as_json"]:
        _echo_json(listing.to_dict())
        return
    for line in listing.lines():
        click.echo(line)


@dlq.command("replay")
@click.argument("action_ids", nargs=-1, metavar="[ACTION_ID]...")
@connection_options(kafka=False, store=True, topics=None)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead action.")
@click.pass_context
def dlq_replay(ctx: click.Context, /, action_ids: tuple[str, ...], **kwargs: Any) -> None:
    """Put dead actions back to pending; a running connector delivers them again.

    Every ACTION_ID must name a dead action (`dlq list` shows them); if one does not,
    nothing is replayed and the error names it. Dead records are not replayed: decoding
    is deterministic, the same bytes would fail again. Fix the producer and send the
    event anew.
    """
    from connector.ops.dlq import not_dead, replay_actions

    replay_all = kwargs.pop("replay_all")
    if bool(action_ids) == replay_all:
        raise click.UsageError("give ACTION_ID... or --all (not both)")
    ops = _ops(ctx, kwargs, needs_kafka=False)
    with ops.open_store() as store:
        unknown = not_dead(store, action_ids)
        if unknown:
            listed = ", ".join(unknown)
            noun = "a dead action" if len(unknown) == 1 else "dead actions"
            raise click.BadParameter(
                f"not {noun} in the store: {listed} (see `event-connector dlq list`); "
                "nothing was replayed",
                ctx=ctx,
                param_hint="ACTION_ID",
            )
        moved = replay_actions(store, None if replay_all else action_ids)
    click.echo(f"{_plural(moved, 'dead action')} back to pending")
