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
def demo() -> None:
    """Start a real Kafka (design §10), send a few events and read them back."""
    from connector.demo import run_demo

    run_demo(click.echo)


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
