"""``event-connector dev-broker`` and ``event-connector demo``: devkit's commands.

The product's CLI does not import devkit: it finds these through the entry point group
``kafka_event_connector.commands`` (pyproject.toml), which ``connector.commands.plugins``
reads. A distribution without devkit (the connector image) simply has no such commands.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click


@click.command("dev-broker")
@click.option("--port", type=int, default=None, help="Client port (default: a free one).")
@click.option("--controller-port", type=int, default=None, help="KRaft controller port.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the broker's data here across runs (default: a temp dir removed on exit).",
)
@click.option(
    "--security",
    type=click.Choice(["plaintext", "sasl-ssl", "mtls"]),
    default="plaintext",
    show_default=True,
    help="What the client listener requires: nothing; SASL (SCRAM-SHA-512 or PLAIN) over "
    "TLS; or TLS with a client certificate. Certificates are made for the session.",
)
@click.option("--resolve-only", is_flag=True, help="Fetch the broker's jars and exit.")
def dev_broker(
    port: int | None,
    controller_port: int | None,
    data_dir: Path | None,
    security: str,
    resolve_only: bool,
) -> None:
    """Run a local single-node Apache Kafka broker (KRaft) in the foreground.

    The broker's jars are resolved once from Maven Central (pinned by docker/kafka/pom.xml)
    and run with Java 17. Prints the bootstrap address and the connector config's
    ``kafka:`` block that reaches it (with --security: the credentials and the certificate
    files, kept in --data-dir or removed on exit); stop with Ctrl-C or SIGTERM.
    """
    from devkit.broker import DevBroker, resolve_jars

    started = (port, controller_port, data_dir, security)
    if resolve_only and started != (None, None, None, "plaintext"):
        raise click.UsageError("--resolve-only starts no broker: it takes no other option")
    jars = resolve_jars()
    if resolve_only:
        click.echo(f"Kafka broker jars ready in {jars}")
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with DevBroker(
        jars, port=port, controller_port=controller_port, workdir=data_dir, security=security
    ) as broker:
        cluster = broker.cluster()
        click.echo(
            f"Apache Kafka {cluster.version} running ({security}); "
            f"bootstrap: {cluster.bootstrap_servers}"
        )
        click.echo(f"export KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}")
        click.echo("# the connector config's kafka: block for this broker")
        click.echo(cluster.kafka_yaml(), nl=False)
        sys.stdout.flush()
        stop.wait()
        click.echo("stopping the broker")


@click.command()
@click.option(
    "-c",
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The quickstart config to run [examples/quickstart.yaml of the checkout].",
)
def demo(config: Path | None) -> None:
    """The quickstart on embedded defaults: a real Kafka (see docs/architecture.md), the connector
    with SQLite checkpoints, the AIFlow seed's events and their actions, the status
    table, then kill -9 in the middle of a stream and a restart: no action fires twice."""
    from devkit.demo import QUICKSTART, run_demo

    run_demo(click.echo, config or QUICKSTART)
