"""The ``event-connector`` command line.

Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import click

from connector.errors import ConfigError, ConnectorError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """Turn Kafka events into workflow actions exactly once."""
    _setup_logging(verbose)


@cli.command("dev-broker")
@click.option("--port", type=int, default=None, help="Client port (default: a free one).")
@click.option("--controller-port", type=int, default=None, help="KRaft controller port.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the broker's data here across runs (default: a temp dir removed on exit).",
)
@click.option("--resolve-only", is_flag=True, help="Fetch the broker's jars and exit.")
def dev_broker(
    port: int | None, controller_port: int | None, data_dir: Path | None, resolve_only: bool
) -> None:
    """Run a local single-node Apache Kafka broker (KRaft) in the foreground.

    The broker's jars are resolved once from Maven Central (pinned by docker/kafka/pom.xml)
    and run with Java 17. Prints the bootstrap address; stop with Ctrl-C or SIGTERM.
    """
    from connector.devbroker import DevBroker, resolve_jars

    jars = resolve_jars()
    if resolve_only:
        click.echo(f"Kafka broker jars ready in {jars}")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with DevBroker(jars, port=port, controller_port=controller_port, workdir=data_dir) as broker:
        cluster = broker.cluster()
        click.echo(
            f"Apache Kafka {cluster.version} running; bootstrap: {cluster.bootstrap_servers}"
        )
        click.echo(f"export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}")
        sys.stdout.flush()
        stop.wait()
        click.echo("stopping the broker")


@cli.command()
@click.option(
    "--bootstrap",
    envvar="KAFKA_BOOTSTRAP_SERVERS",
    required=True,
    help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS).",
)
@click.option("--group", "group_id", default="event-connector", show_default=True)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    required=True,
    metavar="TOPIC[=NAMESPACE]",
    help="A topic to read; its events belong to NAMESPACE (default: 'default'). Repeatable.",
)
@click.option(
    "--store",
    default="sqlite://checkpoints.db",
    show_default=True,
    help="Checkpoint store URL: sqlite://RELATIVE or sqlite:///ABSOLUTE path, postgresql://...",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the log target writes actions as JSON lines (default: stdout).",
)
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--linger-ms", type=click.IntRange(0), default=10, show_default=True)
@click.option("--dlq-topic", default=None, help="Dead-letter topic for undecodable records.")
@click.option(
    "--instance-id",
    default=None,
    help="Stable member id (Kafka static membership): a restart with the same id resumes "
    "its partitions at once instead of after the session timeout.",
)
@click.option("--outbox-max", type=click.IntRange(1), default=100_000, show_default=True)
@click.option(
    "--dispatch-chunk",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Most actions handed to a target in one call.",
)
def run(
    bootstrap: str,
    group_id: str,
    topics: tuple[str, ...],
    store: str,
    log_file: Path | None,
    batch_size: int,
    linger_ms: int,
    dlq_topic: str | None,
    instance_id: str | None,
    outbox_max: int,
    dispatch_chunk: int,
) -> None:
    """Run the pipeline: every event of TOPIC becomes one action on the log target.

    Stop with SIGTERM or Ctrl-C: the batch in progress is checkpointed and committed first.
    """
    from checkpoint import open_store
    from connector.runtime import NotifyAll, PipelineSettings
    from connector.service import ConnectorService
    from connector.targets import LogTarget

    mapping = {}
    for spec in topics:
        topic, _, namespace = spec.partition("=")
        mapping[topic] = namespace or "default"
    settings = PipelineSettings(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        topics=mapping,
        batch_size=batch_size,
        linger_ms=linger_ms,
        dlq_topic=dlq_topic,
        group_instance_id=instance_id,
        outbox_max_pending=outbox_max,
    )
    service = ConnectorService(
        settings,
        open_store(store),
        NotifyAll("log"),
        {"log": LogTarget("log", log_file)},
        dispatch_chunk=dispatch_chunk,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.run(stop)


@cli.command()
def demo() -> None:
    """Start a real Kafka (design §10), send a few events and read them back."""
    from connector.demo import run_demo

    run_demo(click.echo)


# subcommands defined in connector/commands/ (one line each)
from connector.commands import gateway_cmd, ops_cmds  # noqa: E402

cli.add_command(ops_cmds.send)
cli.add_command(ops_cmds.tail)
cli.add_command(ops_cmds.status)
cli.add_command(ops_cmds.replay)
cli.add_command(ops_cmds.dlq)
cli.add_command(gateway_cmd.gateway)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ConnectorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
