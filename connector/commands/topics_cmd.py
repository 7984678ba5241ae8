"""``event-connector topics list|create``: the connector's topics, for operators.

``run`` creates the topics it needs when they are missing; on a cluster where the
connector may not create topics (``topic_creation: {enabled: false}``), an operator with
the right creates them up front with ``topics create -c FILE``. Both commands take the
file's cluster settings (SASL, TLS) with ``-c``, or ``--bootstrap`` alone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from kec.kafka.settings import Connection

if TYPE_CHECKING:
    from connector.topics import TopicInfo


def _connection(config: str | None, bootstrap: str | None) -> tuple[Connection, Any, str]:
    """(the cluster, the loaded config or None, how to name it on the command line)."""
    if config is not None:
        from connector.common.redaction import redact_logs
        from connector.config import load_config

        cfg = load_config(config)
        redact_logs(cfg.secrets())
        client = cfg.kafka.connection()
        if bootstrap:
            client = Connection(bootstrap, client.properties)
        return client, cfg, f"-c {config}"
    if not bootstrap:
        raise click.UsageError(
            "give -c/--config FILE, or --bootstrap (env KAFKA_BOOTSTRAP_SERVERS)"
        )
    return Connection(bootstrap), None, f"--bootstrap {bootstrap}"


def _options(func: Any) -> Any:
    func = click.option(
        "--bootstrap",
        envvar="KAFKA_BOOTSTRAP_SERVERS",
        default=None,
        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS) when no -c is given; "
        "with -c, given on the command line, it replaces the file's.",
    )(func)
    return click.option(
        "-c",
        "--config",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Connector config file (YAML): its cluster settings and its topics.",
    )(func)


def _describe(info: TopicInfo | None) -> str:
    if info is None:
        return "missing"
    return f"{info.partitions} partitions, replication factor {info.replication_factor}"


@click.group()
def topics() -> None:
    """The connector's Kafka topics: list them, or create them up front.

    `run` creates the topics it reads (its namespaces'), the HTTP gateway's topic and
    the dead-letter topic when they are missing, with topic_creation's partitions and
    replication factor; `send` and `gateway` create the topic they write to. Where the
    connector may not create topics, set `topic_creation: {enabled: false}` in its
    config and run `event-connector topics create -c FILE` as a user who may.
    """


@topics.command("list")
@_options
@click.option(
    "--all", "everything", is_flag=True, help="Every topic of the cluster, not only the config's."
)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_cmd(config: str | None, bootstrap: str | None, everything: bool, as_json: bool) -> None:
    """List topics: with -c, the config's own (what each is for, and whether it exists);
    without -c, or with --all, every topic of the cluster."""
    from connector.topics import config_topics, describe_topics, list_topics, open_admin
    from kec.kafka import reach

    client, cfg, _ = _connection(config, bootstrap)
    roles: dict[str, str] = config_topics(cfg) if cfg is not None else {}
    found: dict[str, TopicInfo | None]
    if cfg is None or everything:
        found = dict(list_topics(client))
        found.update({name: None for name in roles if name not in found})
    else:
        reach(client)
        found = describe_topics(open_admin(client), roles)
    listed = sorted(found.items())
    if as_json:
        rows = [
            {
                "topic": name,
                "for": roles.get(name, ""),
                "exists": info is not None,
                "partitions": info.partitions if info is not None else None,
                "replication_factor": info.replication_factor if info is not None else None,
            }
            for name, info in listed
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not listed:
        click.echo("no topics")
        return
    width = max(len(name) for name, _ in listed)
    role_width = max((len(role) for role in roles.values()), default=0)
    for name, info in listed:
        role = f"{roles.get(name, ''):<{role_width}}  " if roles else ""
        click.echo(f"{name:<{width}}  {role}{_describe(info)}")


@topics.command("create")
@click.argument("names", nargs=-1, metavar="[TOPIC]...")
@_options
@click.option(
    "--partitions",
    type=click.IntRange(1),
    default=None,
    help="Partitions of each new topic [the file's topic_creation.partitions, else 3].",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(-1),
    default=None,
    help="Replicas of each partition; -1: the broker's default.replication.factor "
    "[the file's topic_creation.replication_factor, else -1].",
)
def create_cmd(
    names: tuple[str, ...],
    config: str | None,
    bootstrap: str | None,
    partitions: int | None,
    replication_factor: int | None,
) -> None:
    """Create the TOPICs, or with -c and no TOPIC every topic the config needs, when
    missing. Topics that exist are left as they are. Creates even when the file turns
    topic_creation off: that setting is for the connector, this command is the operator's."""
    from connector.topics import (
        TopicPolicy,
        config_topics,
        describe_topics,
        ensure_topics,
        open_admin,
        policy_of,
    )

    if replication_factor == 0:
        raise click.BadParameter("must be -1 or at least 1", param_hint="--replication-factor")
    client, cfg, source = _connection(config, bootstrap)
    wanted = list(names) or (list(config_topics(cfg)) if cfg is not None else [])
    if not wanted:
        raise click.UsageError("name the topics to create, or give -c FILE")
    policy = policy_of(cfg) if cfg is not None else TopicPolicy()
    policy = TopicPolicy(
        create=True,
        partitions=partitions or policy.partitions,
        replication_factor=replication_factor or policy.replication_factor,
        request_timeout=policy.request_timeout,
    )
    created = set(ensure_topics(client, wanted, policy, source=source))
    found = describe_topics(open_admin(client), wanted)
    for name in sorted(set(wanted)):
        verb = "created" if name in created else "exists "
        click.echo(f"{verb} {name} ({_describe(found[name])})")
