"""The ``event-connector`` command line.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from connector.commands import data_dir_option, refuse_data_dir_without_config
from connector.commands.plugins import PluginGroup
from connector.common.heap import settle_for_service
from connector.common.redaction import redact_known, redact_logs
from kec.errors import ConfigError, ConnectorError

if TYPE_CHECKING:
    from connector.config import ConnectorConfig
    from connector.control import ConfigSource, Control, SignalReload
    from connector.service import ConnectorService

log = logging.getLogger(__name__)


# HTTP client libraries log every request at INFO: one line per webhook delivery.
QUIET_LOGGERS = ("httpx", "httpcore")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET_LOGGERS:
        # -v shows them again, at DEBUG like everything else.
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


# Commands of other packages (the checkout's dev-broker and demo) come from entry points.
@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.version_option(
    package_name="kafka-event-connector",
    prog_name="event-connector",
    message="%(prog)s %(version)s",
)
def cli(verbose: bool) -> None:
    """Turn Kafka events into workflow actions exactly once."""
    _setup_logging(verbose)


# Options of `run` that only apply without a config file (the file says all of it).
_QUICK_OPTIONS = (
    "bootstrap",
    "group_id",
    "topics",
    "store",
    "log_file",
    "batch_size",
    "linger_ms",
    "dlq_topic",
    "outbox_max",
    "create_topics",
)


@cli.command()
@click.option(
    "-c",
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Connector config file (YAML): topics, store, rules, targets, http, metrics.",
)
@data_dir_option
@click.option(
    "--instance-id",
    default=None,
    help="Stable member id (Kafka static membership): a restart with the same id resumes "
    "its partitions at once instead of after the session timeout. Overrides the file's "
    "pipeline.instance_id.",
)
@click.option(
    "--gateway/--no-gateway",
    "serve_gateway",
    default=True,
    show_default=True,
    help="With an http: section: serve the HTTP gateway. --no-gateway still reads and "
    "checkpoints the gateway's topic (replicas beside a standalone `event-connector "
    "gateway`).",
)
@click.option(
    "--processes",
    default=None,
    metavar="N|auto",
    help="With -c: pipeline processes in this instance (overrides the file's "
    "pipeline.processes; auto: the number of cores, at most the partitions read).",
)
@click.option(
    "--bootstrap",
    envvar="KAFKA_BOOTSTRAP_SERVERS",
    default=None,
    help="Without -c: Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS).",
)
@click.option("--group", "group_id", default="event-connector", show_default=True)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    metavar="TOPIC[=NAMESPACE]",
    help="Without -c: a topic to read; its events belong to NAMESPACE (default: "
    "'default'). Repeatable.",
)
@click.option(
    "--store",
    default="sqlite://checkpoints.db",
    show_default=True,
    help="Without -c: checkpoint store URL: sqlite://RELATIVE or sqlite:///ABSOLUTE path, "
    "postgresql://...",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Without -c: where the log target writes actions as JSON lines (default: stdout).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Most records checkpointed in one store transaction (one fsync).",
)
@click.option(
    "--linger-ms",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="How long a poll waits for a record when none is fetched (at least 10 ms; it ends "
    "when one arrives); fetched records are checkpointed at once.",
)
@click.option("--dlq-topic", default=None, help="Dead-letter topic for undecodable records.")
@click.option("--outbox-max", type=click.IntRange(1), default=100_000, show_default=True)
@click.option(
    "--create-topics/--no-create-topics",
    default=True,
    show_default=True,
    help="Without -c: create the --topic and --dlq-topic topics when missing (3 "
    "partitions, the broker's replication factor); with -c the file's topic_creation says.",
)
@click.pass_context
def run(
    ctx: click.Context,
    /,
    config: Path | None,
    data_dir: Path | None,
    instance_id: str | None,
    serve_gateway: bool,
    processes: str | None,
    **quick: Any,
) -> None:
    """Run the connector: read the topics, checkpoint every event exactly once, fire the
    rules' actions and deliver them to their targets.

    With -c FILE everything comes from the file (see `event-connector validate` and
    `event-connector schema`), and the HTTP gateway and metrics endpoint are served when
    the file has `http:` / `metrics:` sections. With `http:` the gateway's topic is read
    and checkpointed like the others (its events fire rules of namespace
    `http.namespace`), also with --no-gateway, which only leaves the HTTP serving to a
    standalone `event-connector gateway`. Without -c, a quick mode: every event of each
    --topic becomes one `notify` action on the log target.

    Before it consumes anything it creates the topics it reads and writes when they are
    missing (see `event-connector topics --help`), unless the file turns that off.

    Stop with SIGTERM or Ctrl-C: the batch in progress is checkpointed and committed
    first; actions not yet delivered stay in the outbox for the next start.
    """
    # At once: a SIGTERM while the topics are checked must stop the run, not kill it
    # (Ctrl-C keeps interrupting at once until the service runs).
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from connector.assembly import build_service
    from connector.control import ConfigSource, SignalReload, install_sighup

    # SIGHUP reloads the config (docs/architecture.md, "Reloading the config"); until the
    # connector runs it is only logged (its default would end the process).
    reload_on_hup = SignalReload()
    install_sighup(reload_on_hup)

    service: ConnectorService
    create_topics: bool = quick.pop("create_topics")
    refuse_data_dir_without_config(ctx, config)
    if processes is not None and config is None:
        raise click.UsageError("--processes: only with -c FILE")
    if config is not None:
        given = [
            name
            for name in _QUICK_OPTIONS
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
        ]
        if given:
            opts = {p.name: p.opts[-1] for p in ctx.command.params}
            flags = ", ".join(opts[name] for name in given)
            raise click.UsageError(f"{flags}: not used with -c; set it in {config}")
        from connector.config import load_config
        from connector.config.paths import check_writable, data_dir_of

        cfg = load_config(config, data_dir=data_dir)
        redact_logs(cfg.secrets())
        if processes is not None:
            cfg = _with_processes(cfg, processes)
        check_writable(cfg, data_dir_of(config, data_dir, os.environ))
        log.info(
            "config %s: %d topics, %d rules, targets %s",
            config,
            len(cfg.topics()),
            len(cfg.rules),
            ", ".join(cfg.targets),
        )
        _prepare_config_run(cfg, config, serve_gateway=serve_gateway)
        source = ConfigSource(config.absolute(), data_dir and data_dir.absolute(), processes)
        count = _process_count(cfg)
        if count > 1:
            if stop.is_set():
                log.info("stopped before the connector started")
                return
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            _supervise(ctx, cfg, source, instance_id, count, stop, serve_gateway, reload_on_hup)
            return
        service = build_service(
            cfg, instance_id=instance_id, serve_gateway=serve_gateway, source=source
        )
    else:
        service = _quick_service(instance_id=instance_id, **quick)
        _prepare_quick_run(quick, create_topics)
    if stop.is_set():
        log.info("stopped before the connector started")
        return
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    reload_on_hup.control = service.control
    settle_for_service()
    service.run(stop)


def _with_processes(cfg: ConnectorConfig, value: str) -> ConnectorConfig:
    """``cfg`` with ``--processes`` instead of the file's ``pipeline.processes``."""
    from pydantic import ValidationError

    try:
        pipeline = type(cfg.pipeline).model_validate(
            {**cfg.pipeline.model_dump(), "processes": value}
        )
    except ValidationError:
        raise click.BadParameter(
            f"{value!r}: a whole number of 1 or more, or auto", param_hint="--processes"
        ) from None
    return cfg.model_copy(update={"pipeline": pipeline})


def _process_count(cfg: ConnectorConfig) -> int:
    """``pipeline.processes``, with ``auto`` worked out: the cores, at most the partitions
    of the topics the pipeline reads."""
    wanted = cfg.pipeline.processes
    if wanted != "auto":
        return int(wanted)
    from connector.topics import describe_topics, open_admin

    topics = set(cfg.topics())
    if cfg.http is not None:
        topics.add(cfg.http.topic)
    found = describe_topics(open_admin(cfg.kafka.connection()), topics)
    partitions = sum(len(info.partition_ids) for info in found.values() if info is not None)
    count = max(1, min(os.cpu_count() or 1, partitions))
    log.info("pipeline.processes auto: %d (%d cores, %d partitions)", count,
             os.cpu_count() or 1, partitions)  # fmt: skip
    return count


def _supervise(
    ctx: click.Context,
    cfg: ConnectorConfig,
    source: ConfigSource,
    instance_id: str | None,
    count: int,
    stop: threading.Event,
    serve_gateway: bool,
    reload_on_hup: SignalReload,
) -> None:
    """``run`` as the supervisor of ``count`` pipeline processes (connector.supervisor);
    SIGHUP reloads for all of them."""
    from connector.assembly import supervise
    from connector.supervisor import GENERATED_MEMBER_SESSION_MS, ChildSpec, default_base

    configured = instance_id or cfg.pipeline.instance_id
    base = configured or default_base()
    session = None if configured else GENERATED_MEMBER_SESSION_MS
    verbose = bool(ctx.find_root().params.get("verbose"))
    specs = [
        ChildSpec(source.path, source.data_dir, base, i, verbose, session_timeout_ms=session)
        for i in range(1, count + 1)
    ]

    def expose(control: Control) -> None:
        reload_on_hup.control = control

    supervise(cfg, specs, stop, serve_gateway=serve_gateway, source=source, on_control=expose)


def _prepare_config_run(cfg: ConnectorConfig, path: Path, *, serve_gateway: bool) -> None:
    """Before the service starts: the gateway's and admin API's ports are free, every topic
    exists."""
    from connector.commands.ports import check_listen, url_of
    from connector.topics import ensure_config_topics

    http = cfg.http if serve_gateway else None
    if http is not None:
        check_listen(
            http.host, http.port, what="the HTTP gateway", setting=f"http.host/http.port in {path}"
        )
    if cfg.admin is not None:
        admin = cfg.admin
        check_listen(
            admin.host, admin.port, what="the admin API", setting=f"admin.host/admin.port in {path}"
        )
        log.info("admin API and console on %s (/api/v1/, /)", url_of(admin.host, admin.port))
    ensure_config_topics(cfg, source=f"-c {path}")
    if http is not None:
        log.info(
            "HTTP gateway on %s: POST /event/send_event/WORKFLOW_ID -> topic %s (namespace %s)",
            url_of(http.host, http.port),
            http.topic,
            http.namespace,
        )
    elif cfg.http is not None:
        log.info(
            "HTTP gateway not served here (--no-gateway); its topic %s is read (namespace %s)",
            cfg.http.topic,
            cfg.http.namespace,
        )


def _prepare_quick_run(quick: dict[str, Any], create: bool) -> None:
    """Quick mode's topics (and dead-letter topic) exist before the service starts."""
    from connector.topics import TopicPolicy, ensure_topics
    from kec.kafka import Connection

    topics = [spec.partition("=")[0] for spec in quick["topics"]]
    if quick["dlq_topic"]:
        topics.append(quick["dlq_topic"])
    ensure_topics(
        Connection(quick["bootstrap"]),
        topics,
        TopicPolicy(create=create),
        source=f"--bootstrap {quick['bootstrap']}",
    )


def _quick_service(
    *, bootstrap: str | None, topics: tuple[str, ...], **options: Any
) -> ConnectorService:
    """``run`` without -c: the options as :func:`connector.assembly.quick_service` takes them."""
    from connector.assembly import quick_service

    if not bootstrap or not topics:
        raise click.UsageError(
            "give -c FILE, or --bootstrap (env KAFKA_BOOTSTRAP_SERVERS) and --topic"
        )
    mapping = {}
    for spec in topics:
        topic, _, namespace = spec.partition("=")
        mapping[topic] = namespace or "default"
    return quick_service(bootstrap=bootstrap, topics=mapping, **options)


# subcommands defined in connector/commands/ (one line each)
from connector.commands import (  # noqa: E402
    config_cmds,
    gateway_cmd,
    ops_cmds,
    partitions_cmd,
    topics_cmd,
)

cli.add_command(config_cmds.validate)
cli.add_command(config_cmds.schema)
cli.add_command(config_cmds.explain)
cli.add_command(ops_cmds.send)
cli.add_command(ops_cmds.tail)
cli.add_command(ops_cmds.status)
cli.add_command(ops_cmds.trace)
cli.add_command(ops_cmds.replay)
cli.add_command(ops_cmds.dlq)
cli.add_command(gateway_cmd.gateway)
cli.add_command(topics_cmd.topics)
cli.add_command(partitions_cmd.partitions)


def main() -> None:
    # A fatal signal (a crash inside a C extension) prints every thread's Python stack.
    faulthandler.enable()
    try:
        # Outside standalone mode click returns a command's ctx.exit(code) instead of exiting.
        code = cli(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except ConfigError as exc:
        click.echo(f"error: {redact_known(str(exc))}", err=True)
        sys.exit(2)
    except ConnectorError as exc:
        click.echo(f"error: {redact_known(str(exc))}", err=True)
        sys.exit(1)
