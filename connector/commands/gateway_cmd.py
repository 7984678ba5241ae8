"""``event-connector gateway``: serve the HTTP events gateway (docs/architecture.md).

Settings come from ``-c FILE`` (its ``kafka:``, ``checkpoint:`` and ``http:`` sections)
and/or the options; an option given on the command line wins over the file. TLS and the
limits come from the file's ``http:`` section only.

The gateway only writes to its topic: a connector (``event-connector run`` with the same
``http:`` section, so the same topic, and the same store) checkpoints the events, and
the gateway answers a send once the store holds its event. It joins no consumer group.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import click

from connector.commands import data_dir_option, refuse_data_dir_without_config, stop_on_signals
from connector.common.redaction import redact_logs

_DEFAULT_STORE = "sqlite://checkpoints.db"
_DEFAULT_LISTEN = "127.0.0.1:8000"
_DEFAULT_TOPIC = "http-events"

log = logging.getLogger(__name__)


@click.command("gateway")
@click.option(
    "-c",
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Connector config file (YAML): kafka, checkpoint and http sections.",
)
@click.option(
    "--bootstrap",
    envvar="KAFKA_BOOTSTRAP_SERVERS",
    default=None,
    help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS).",
)
@click.option("--store", default=None, help=f"Checkpoint store URL [{_DEFAULT_STORE}].")
@data_dir_option
@click.option(
    "--listen", default=None, metavar="HOST:PORT", help=f"Where to serve [{_DEFAULT_LISTEN}]."
)
@click.option(
    "--token",
    envvar="KEC_GATEWAY_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' (env KEC_GATEWAY_TOKEN).",
)
@click.option(
    "--strict/--no-strict",
    default=None,
    help="Accept only events a listener waits for (404 otherwise). Default: keep early "
    "events until their listener arrives.",
)
@click.option("--topic", default=None, help=f"Kafka topic of HTTP events [{_DEFAULT_TOPIC}].")
@click.option("--namespace", default=None, help="Namespace of the events [http].")
@click.option(
    "--create-topic/--no-create-topic",
    default=None,
    help="Create the topic when it is missing [the file's topic_creation.enabled; without "
    "-c: create].",
)
@click.option(
    "--checkpoint-timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds a send waits for a connector to checkpoint its event before the reply "
    "is 500 [the file's http.checkpoint_timeout_seconds; without -c: 15].",
)
@click.option(
    "--deliver-timeout",
    type=click.FloatRange(min=0.5),
    default=5.0,
    show_default=True,
    help="Seconds Kafka has to acknowledge an event before the reply is 503.",
)
@click.pass_context
def gateway(
    ctx: click.Context,
    /,
    config: str | None,
    bootstrap: str | None,
    store: str | None,
    data_dir: Path | None,
    listen: str | None,
    token: str | None,
    strict: bool | None,
    topic: str | None,
    namespace: str | None,
    create_topic: bool | None,
    checkpoint_timeout: float | None,
    deliver_timeout: float,
) -> None:
    """Serve the HTTP events gateway.

    POST /event/send_event/WORKFLOW_ID with {"event_key": ..., "event_payload": ...}
    writes the event to Kafka and answers 200 once it is durably checkpointed in the
    store; HTTPListener long-polls GET /event/wait/WORKFLOW_ID/EVENT_KEY. The event's
    key is EVENT_KEY and its context WORKFLOW_ID, so a rule matches it with `key:` (and
    `context:` for one workflow). The topic is created when missing unless creation is
    off. Stop with Ctrl-C or SIGTERM: open requests are finished first.

    The gateway only writes to Kafka: `event-connector run` with the same `http:`
    section (same topic) and the same store checkpoints the events and fires their
    rules. With no such connector running every send answers 500 after the checkpoint
    timeout (the event stays in Kafka; a resend with the same Idempotency-Key is safe).
    """
    from checkpoint import open_store
    from connector.assembly import serve_gateway, standalone_gateway, written_by
    from connector.commands.ports import check_listen, url_of
    from connector.config.paths import check_files
    from connector.gateway import GatewaySettings, parse_listen
    from connector.gateway.server import serving_options
    from connector.topics import TopicPolicy, ensure_topics, policy_of
    from kec.codec import MAX_EVENT_BYTES
    from kec.kafka import Connection

    refuse_data_dir_without_config(ctx, config)
    properties: dict[str, Any] = {}
    options: dict[str, Any] = {}
    store_url, host_port = store, listen
    max_event_bytes = MAX_EVENT_BYTES  # the file's pipeline.max_event_bytes, else run's
    store_setting, written_from = "--store", None
    policy = TopicPolicy()
    listen_setting = "--listen"
    if config is not None:
        from connector.config import load_config
        from connector.config.paths import data_dir_of

        cfg = load_config(config, data_dir=data_dir)
        redact_logs(cfg.secrets())
        policy = policy_of(cfg)
        properties = dict(cfg.kafka.client_config())
        max_event_bytes = cfg.pipeline.max_event_bytes
        if store_url is None:
            store_url = cfg.checkpoint.url()
            store_setting, written_from = (
                "checkpoint.path",
                data_dir_of(config, data_dir, os.environ),
            )
        http = cfg.http
        if http is not None:
            if host_port is None:
                listen_setting = f"--listen, or http.host/http.port in {config}"
            host_port = host_port or f"{http.host}:{http.port}"
            if token is None and http.token is not None:
                token = http.token.get_secret_value()
            if strict is None:
                strict = http.strict
            if checkpoint_timeout is None:
                checkpoint_timeout = http.checkpoint_timeout_seconds
            topic = topic or http.topic
            namespace = namespace or http.namespace
            options = serving_options(http)
    if bootstrap:
        properties["bootstrap.servers"] = bootstrap
    if not properties.get("bootstrap.servers"):
        raise click.UsageError("give --bootstrap (env KAFKA_BOOTSTRAP_SERVERS) or -c FILE")
    connection = Connection.of(properties)
    servers = connection.bootstrap_servers
    host, port = parse_listen(host_port or _DEFAULT_LISTEN)
    settings = GatewaySettings(
        connection=connection,
        topic=topic or _DEFAULT_TOPIC,
        namespace=namespace or "http",
        strict=bool(strict),
        checkpoint_timeout=checkpoint_timeout or 15.0,
        deliver_timeout=deliver_timeout,
        max_event_bytes=max_event_bytes,
    )
    gateway_store = open_store(store_url or _DEFAULT_STORE)
    check_files(written_by(gateway_store, store_setting), written_from)
    check_listen(host, port, what="the HTTP gateway", setting=listen_setting)
    if create_topic is not None:
        policy = dataclasses.replace(policy, create=create_topic)
    source = f"-c {config}" if config is not None and not bootstrap else f"--bootstrap {servers}"
    ensure_topics(connection, [settings.topic], policy, source=source)
    server = standalone_gateway(
        settings, gateway_store, host=host, port=port, token=token, options=options
    )
    log.info(
        "HTTP gateway on %s: POST /event/send_event/WORKFLOW_ID -> topic %s (%s)",
        url_of(host, port, tls=options.get("tls") is not None),
        settings.topic,
        "strict" if settings.strict else "keeps early events",
    )
    log.info(
        "the gateway only writes topic %s: a connector (event-connector run with the same "
        "http: section) must read it into this store to confirm sends; without one a "
        "send answers 500 after %gs",
        settings.topic,
        settings.checkpoint_timeout,
    )
    with stop_on_signals() as stop:  # while the store is opened; then the server's own
        serve_gateway(server, gateway_store, stop)
