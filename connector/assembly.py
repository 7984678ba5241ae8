"""Where the application is put together: every command builds what it runs here.

One function per need, each made of the same steps:

* :func:`build_service`: ``run -c FILE``; the pipeline, dispatcher, targets and store,
  with the HTTP gateway, the pruner, the progress log and the metrics endpoint beside;
* :func:`supervise` and :func:`build_child_service`: ``run -c FILE`` with
  ``pipeline.processes`` above 1, the supervisor and each of its pipeline processes;
* :func:`quick_service`: ``run`` without a file; every event becomes one action on the
  log target;
* :func:`standalone_gateway` and :func:`serve_gateway`: ``event-connector gateway``;
* :func:`open_tool_store` and :func:`build_evaluator`: what the operator commands read.

The steps: :func:`pipeline_settings` (the Kafka connection is the config's
:class:`~kec.kafka.Connection`), :func:`build_evaluator`, :func:`build_targets`,
:func:`written_by` (the files a store writes, to check before starting),
:func:`build_gateway`, and one :class:`~connector.common.ownership.Ownership` registry that
the pipeline and the dispatcher share. Building does no I/O: the Kafka clients are built
by the parts that use them (the pipeline, the gateway, the Kafka target) when they
start, the store and the targets are opened by :meth:`ConnectorService.run` (or
:func:`serve_gateway`), which stops everything it started in reverse order, each stop
guarded (:mod:`connector.lifecycle`).
"""

from __future__ import annotations

import multiprocessing.connection
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from checkpoint import open_store
from checkpoint.base import CheckpointStore
from connector.common.ownership import Ownership
from connector.common.redaction import redact_logs
from connector.lifecycle import Services
from connector.pipeline import PipelineSettings
from connector.service import Companion, ConnectorService

if TYPE_CHECKING:
    from connector.config import ConnectorConfig
    from connector.config.models import HttpConfig
    from connector.config.targets import AnyTargetSpec
    from connector.control import ConfigDiff, ConfigSource, Control
    from connector.gateway import Gateway, GatewayServer, GatewaySettings
    from connector.gateway.waiters import HttpIndex
    from connector.rules.limits import MatchLimits
    from connector.supervisor import ChildSpec
    from connector.targets.base import Target
    from kec.evaluation import Evaluator
    from kec.kafka.registry import RecordFormats
    from kec.kafka.settings import Connection

__all__ = [
    "QUICK_TARGET",
    "build_child_service",
    "build_evaluator",
    "build_gateway",
    "build_service",
    "build_targets",
    "open_tool_store",
    "pipeline_settings",
    "quick_service",
    "run_child",
    "serve_gateway",
    "standalone_gateway",
    "supervise",
    "written_by",
]

# Without a config file every event becomes one action of this (log) target.
QUICK_TARGET = "log"


# -- the steps -------------------------------------------------------------------------


def pipeline_settings(
    cfg: ConnectorConfig, *, instance_id: str | None = None, session_timeout_ms: int | None = None
) -> PipelineSettings:
    """The pipeline of a config file; ``instance_id`` overrides ``pipeline.instance_id``."""
    connection = cfg.kafka.connection()
    return PipelineSettings(
        bootstrap_servers=connection.bootstrap_servers,
        group_id=cfg.group_id,
        topics=cfg.topics(),
        batch_size=cfg.pipeline.batch_size,
        linger_ms=cfg.pipeline.linger_ms,
        dlq_topic=cfg.dead_letter_topic,
        outbox_max_pending=cfg.pipeline.outbox_max_pending,
        max_event_bytes=cfg.pipeline.max_event_bytes,
        kafka_properties=dict(connection.properties),
        group_instance_id=instance_id or cfg.pipeline.instance_id,
        session_timeout_ms=session_timeout_ms,
        idle_interval=cfg.pipeline.idle_interval,
    )


def build_evaluator(rules: Sequence[Any] | None, limits: MatchLimits | None = None) -> Evaluator:
    """The rules (:class:`~connector.rules.Rule`) as an evaluator; ``None`` (no config
    file): every event becomes one ``notify`` action on :data:`QUICK_TARGET`."""
    if rules is None:
        from kec.evaluation import NotifyAll

        return NotifyAll(QUICK_TARGET)
    from connector.rules.trigger import TriggerEngine

    return TriggerEngine(list(rules), limits=limits)


def build_targets(
    specs: Mapping[str, AnyTargetSpec], connection: Connection | None = None
) -> dict[str, Target]:
    """The targets a config file names, unopened; ``connection``: the file's ``kafka:``
    section, for a ``kafka`` target on the same cluster."""
    from connector.targets.registry import build_target

    return {name: build_target(name, spec, connection=connection) for name, spec in specs.items()}


def written_by(store: object, setting: str) -> list[tuple[str, Path]]:
    """The file a store writes, with the ``setting`` that named it (none for PostgreSQL),
    for :func:`~connector.config.paths.check_files`."""
    from checkpoint.sqlite import SqliteStore

    return [(setting, store.path)] if isinstance(store, SqliteStore) else []


def build_gateway(settings: GatewaySettings, store: CheckpointStore) -> Gateway:
    """The gateway's producer and confirmations, not started (its server starts it)."""
    from connector.gateway import Gateway

    return Gateway(settings, store)


def _gateway_settings(
    http: HttpConfig, connection: Connection, max_event_bytes: int
) -> GatewaySettings:
    from connector.gateway import GatewaySettings

    return GatewaySettings(
        connection=connection,
        topic=http.topic,
        namespace=http.namespace,
        strict=http.strict,
        checkpoint_timeout=http.checkpoint_timeout_seconds,
        max_event_bytes=max_event_bytes,
    )


def _waker(index: HttpIndex, wake: Callable[[], None]) -> Callable[[], None]:
    """``wake`` after a batch in which ``index`` queued HTTP events (none: no wake-up)."""
    seen = index.indexed

    def after_batch() -> None:
        nonlocal seen
        if index.indexed != seen:
            seen = index.indexed
            wake()

    return after_batch


# -- the full run ------------------------------------------------------------------------


def build_service(
    cfg: ConnectorConfig,
    *,
    instance_id: str | None = None,
    serve_gateway: bool = True,
    source: ConfigSource | None = None,
) -> ConnectorService:
    """The service a config file describes, not started; ``instance_id`` overrides the file's.

    Every topic of ``namespaces`` is read by the pipeline; its events go through ``rules``
    to ``targets``. With ``http:`` the pipeline reads the gateway's topic too (namespace
    ``http.namespace``: the same rules, and the waiters' queue rows), and the gateway is
    served beside it unless ``serve_gateway`` is false (``run --no-gateway``: replicas
    that checkpoint the topic while a standalone ``event-connector gateway`` serves HTTP);
    with ``metrics:`` a Prometheus endpoint serves :meth:`ConnectorService.snapshot`, with
    ``admin:`` the admin API and console (:mod:`connector.admin`). A
    :class:`~connector.ops.retention.Pruner` deletes expired rule state, and with
    ``checkpoint.retention_days`` everything else older than that. ``source``: where
    ``cfg`` came from, which ``service.control`` reloads.
    """
    from connector.metrics.progress import ProgressLog

    store = open_store(cfg.checkpoint.url(), exclusive=True)
    store.lineage = cfg.checkpoint.lineage
    service, gateway = _service(cfg, store, instance_id, serve_gateway=serve_gateway)
    _attach_control(service, cfg, source)
    if gateway is not None and cfg.http is not None:
        from connector.gateway import GatewayServer

        server = GatewayServer.from_config(gateway, cfg.http, health=service.health)
        service.attach(server, "HTTP gateway")
    _attach_pruner(service, cfg, store)
    service.attach(ProgressLog(service.snapshot), "progress log")
    if cfg.metrics is not None:
        from connector.metrics.exposition import MetricsServer

        metrics = MetricsServer(
            service.snapshot, service.health, host=cfg.metrics.host, port=cfg.metrics.port
        )
        service.attach(metrics, "metrics endpoint")
    if cfg.admin is not None:
        service.attach(_admin_server(cfg, store, service, service.instance_id), "admin server")
    return service


def _admin_server(
    cfg: ConnectorConfig, store: CheckpointStore, numbers: Any, instance: str
) -> Companion:
    """The admin API and console of ``cfg.admin`` on ``store``; ``numbers``: the service
    or the supervisor (its ``snapshot``, ``health``, and ``control`` when it has one)."""
    from connector.admin.server import AdminServer
    from connector.admin.source import AdminSource

    assert cfg.admin is not None
    source = AdminSource(
        cfg, store, numbers.snapshot, numbers.health, instance,
        control=lambda: getattr(numbers, "control", None),
    )  # fmt: skip
    return AdminServer.from_config(source, cfg.admin)


def build_child_service(
    cfg: ConnectorConfig,
    member: str,
    index: int,
    *,
    source: ConfigSource | None = None,
    version: int = 1,
    session_timeout_ms: int | None = None,
) -> ConnectorService:
    """Pipeline process ``index`` (1..N) of a supervised instance
    (:mod:`connector.supervisor`), as consumer group member ``member``: the pipeline,
    dispatcher, targets and store of ``cfg``. The store is opened without the SQLite file
    lock (its supervisor holds it, and created the store); the gateway, the metrics
    endpoint and the progress line are the supervisor's; process 1 runs the pruner."""
    store = open_store(cfg.checkpoint.url(), create=False)
    store.lineage = cfg.checkpoint.lineage
    service, _ = _service(
        cfg, store, member, serve_gateway=False, version=version,
        session_timeout_ms=session_timeout_ms,
    )  # fmt: skip
    _attach_control(service, cfg, source, version)
    if index == 1:
        _attach_pruner(service, cfg, store)
    return service


def _service(
    cfg: ConnectorConfig,
    store: CheckpointStore,
    instance_id: str | None,
    *,
    serve_gateway: bool,
    version: int = 1,
    session_timeout_ms: int | None = None,
) -> tuple[ConnectorService, Gateway | None]:
    """The pipeline and dispatcher of ``cfg`` on ``store``; with ``http:`` and
    ``serve_gateway``, the gateway to serve beside them (woken after each batch that
    checkpointed HTTP events). The rules are behind a switch that a reload and pauses
    change (:mod:`connector.control`), inside the gateway's index."""
    from connector.rules.switch import RuleSwitch

    settings = pipeline_settings(
        cfg, instance_id=instance_id, session_timeout_ms=session_timeout_ms
    )
    switch = RuleSwitch(build_evaluator(cfg.rules, cfg.pipeline.match_limits()), version)
    evaluator: Evaluator = switch
    gateway: Gateway | None = None
    after_batch: Callable[[], None] | None = None
    http = cfg.http
    if http is not None:
        from connector.gateway.waiters import HttpIndex

        index = HttpIndex(evaluator, http.namespace)
        evaluator = index
        if serve_gateway:
            gateway = build_gateway(
                _gateway_settings(http, cfg.kafka.connection(), cfg.pipeline.max_event_bytes), store
            )
            after_batch = _waker(index, gateway.checkpointed)
    service = ConnectorService(
        settings,
        store,
        evaluator,
        build_targets(cfg.targets, cfg.kafka.connection()),
        retry_policy=cfg.retry.policy(),
        after_batch=after_batch,
        ownership=Ownership(),
        formats=record_formats(cfg),
        rules=switch,
    )
    return service, gateway


class ServiceReconfig:
    """Applies :class:`~connector.control.Control`'s decisions to a running service:
    builds the new rules and opens the new targets, then has the service swap them in
    between two batches."""

    def __init__(self, service: ConnectorService) -> None:
        self._service = service

    def apply(self, config: ConnectorConfig, text: str, diff: ConfigDiff, version: int) -> None:
        from kec.errors import ConfigError

        service = self._service
        engine = None
        if diff.rules:
            engine = build_evaluator(config.rules, config.pipeline.match_limits())
        targets: dict[str, Target] | None = None
        if diff.targets:
            fresh = build_targets(
                {n: config.targets[n] for n in (*diff.targets_added, *diff.targets_changed)},
                config.kafka.connection(),
            )
            opened: list[Target] = []
            try:
                for name, target in fresh.items():
                    try:
                        target.open()
                    except Exception as exc:
                        raise ConfigError(
                            f"target {name} could not be opened ({type(exc).__name__}: {exc}); "
                            "the running config is kept"
                        ) from exc
                    opened.append(target)
            except BaseException:
                for target in opened:
                    _close_quietly(target)
                raise
            current = service.targets
            targets = {n: fresh[n] if n in fresh else current[n] for n in config.targets}
        policy = config.retry.policy() if diff.retry_changed else None
        try:
            service.reconfigure(engine, targets, policy, version)
        except BaseException:
            if targets is not None:
                for name in (*diff.targets_added, *diff.targets_changed):
                    _close_quietly(targets[name])
            raise

    def set_paused(self, rules: frozenset[str], targets: frozenset[str]) -> None:
        self._service.set_paused(rules, targets)


def _close_quietly(target: Target) -> None:
    import logging

    try:
        target.close()
    except Exception:
        logging.getLogger(__name__).exception("closing target %s failed", target.name)


def _attach_control(
    service: ConnectorService,
    cfg: ConnectorConfig | None,
    source: ConfigSource | None,
    version: int = 1,
    *,
    rules: Sequence[str] = (),
    targets: Sequence[str] = (),
) -> None:
    from connector.control import Control

    service.control = Control(
        ServiceReconfig(service), cfg, source=source, version=version, rules=rules, targets=targets
    )


def record_formats(cfg: ConnectorConfig) -> RecordFormats | None:
    """The topics of ``cfg`` written with a registered schema and a decoder for them
    (no request made yet); None when every namespace is plain."""
    keys, values = cfg.registry_topics()
    if cfg.schema_registry is None or not (keys or values):
        return None
    from kec.kafka.registry import RecordFormats, RegistryDecoder, registry_client

    conf = cfg.schema_registry.client_conf()
    decoder = RegistryDecoder(registry_client(conf), registry_client(conf))
    return RecordFormats(decoder, keys=keys, values=values)


def run_child(spec: ChildSpec, conn: multiprocessing.connection.Connection) -> None:
    """The entry point of a pipeline process (spawned by :func:`supervise`): the service
    of ``spec.config`` as member ``spec.index``, run by
    :func:`connector.supervisor.serve_child`."""
    from connector.supervisor import serve_child

    serve_child(spec, conn, _child_service)


def _child_service(spec: ChildSpec) -> ConnectorService:
    from connector.control import ConfigSource
    from connector.supervisor import member_id

    # The instance's config as its supervisor last validated it (the file may have been
    # edited since without a reload), with its rules version and pauses.
    source = ConfigSource(spec.config, spec.data_dir)
    cfg = source.load(spec.config_text)
    redact_logs(cfg.secrets())
    service = build_child_service(
        cfg, member_id(spec.instance_id, spec.index), spec.index,
        source=source, version=spec.rules_version, session_timeout_ms=spec.session_timeout_ms,
    )  # fmt: skip
    if (spec.paused_rules or spec.paused_targets) and service.control is not None:
        service.control.set_paused(spec.paused_rules, spec.paused_targets)
    return service


def _attach_pruner(service: ConnectorService, cfg: ConnectorConfig, store: CheckpointStore) -> None:
    from connector.ops.retention import Pruner

    days = cfg.checkpoint.retention_days
    service.attach(Pruner(store, days * 86400 if days is not None else None), "pruner")


# -- several pipeline processes ----------------------------------------------------------


def supervise(
    cfg: ConnectorConfig,
    specs: Sequence[ChildSpec],
    stop: threading.Event,
    *,
    serve_gateway: bool = True,
    source: ConfigSource | None = None,
    on_control: Callable[[Control], None] | None = None,
) -> None:
    """``run -c FILE`` with ``pipeline.processes`` above 1 (:mod:`connector.supervisor`):
    open the store (created or migrated here; a SQLite file's lock held until the end),
    serve the instance's HTTP gateway, metrics endpoint and progress line on the
    children's merged numbers, and run the children of ``specs`` until ``stop``. Stops
    the children first, then the servers, then closes the store."""
    from connector.control import Control
    from connector.metrics.progress import ProgressLog
    from connector.service import open_retrying
    from connector.supervisor import Supervisor, session_seconds

    store = open_store(cfg.checkpoint.url(), exclusive=True)
    # SQLite's write lock has no server to take it from a stopped child (Supervisor).
    stopped_limit = (
        session_seconds(cfg.kafka.properties, specs) if cfg.checkpoint.backend == "sqlite" else None
    )
    supervisor = Supervisor(
        specs,
        run_child,
        config_text=source.read() if source else None,
        stopped_limit=stopped_limit,
    )
    supervisor.control = Control(supervisor, cfg, source=source)
    if on_control is not None:
        on_control(supervisor.control)
    companions: list[tuple[str, Any]] = []
    if cfg.http is not None and serve_gateway:
        from connector.gateway import GatewayServer

        gateway = build_gateway(
            _gateway_settings(cfg.http, cfg.kafka.connection(), cfg.pipeline.max_event_bytes), store
        )
        companions.append(
            ("HTTP gateway", GatewayServer.from_config(gateway, cfg.http, health=supervisor.health))
        )
    companions.append(("progress log", ProgressLog(supervisor.snapshot)))
    if cfg.metrics is not None:
        from connector.metrics.exposition import MetricsServer

        server = MetricsServer(
            supervisor.snapshot, supervisor.health, host=cfg.metrics.host, port=cfg.metrics.port
        )
        companions.append(("metrics endpoint", server))
    if cfg.admin is not None:
        base = specs[0].instance_id if specs else "supervisor"
        companions.append(("admin server", _admin_server(cfg, store, supervisor, base)))
    if not open_retrying(store, stop):
        return
    with Services() as services:
        services.push("checkpoint store", store.close)
        for name, companion in companions:
            companion.start()
            services.push(name, companion.stop)
        supervisor.run(stop)


# -- the quick run -----------------------------------------------------------------------


def quick_service(
    *,
    bootstrap: str,
    group_id: str,
    topics: Mapping[str, str],
    store: str,
    log_file: Path | None = None,
    batch_size: int = 1000,
    linger_ms: int = 10,
    dlq_topic: str | None = None,
    instance_id: str | None = None,
    outbox_max: int = 100_000,
) -> ConnectorService:
    """``run`` without a config file: ``topics`` (topic -> namespace) read into the store
    at URL ``store``, every event one ``notify`` action on the log target (JSON lines in
    ``log_file``, or stdout). The files it writes are checked first (a
    :class:`~kec.errors.ConfigError` naming the option)."""
    from connector.config.paths import check_files
    from connector.targets import LogTarget

    settings = PipelineSettings(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        topics=dict(topics),
        batch_size=batch_size,
        linger_ms=linger_ms,
        dlq_topic=dlq_topic,
        group_instance_id=instance_id,
        outbox_max_pending=outbox_max,
    )
    opened = open_store(store, exclusive=True)
    log_files = [("--log-file", log_file)] if log_file is not None else []
    check_files(written_by(opened, "--store") + log_files)
    service = ConnectorService(
        settings,
        opened,
        build_evaluator(None),
        {QUICK_TARGET: LogTarget(QUICK_TARGET, log_file)},
        ownership=Ownership(),
    )
    from kec.evaluation import NotifyAll

    _attach_control(service, None, None, rules=[NotifyAll().rule], targets=[QUICK_TARGET])
    return service


# -- the gateway alone -------------------------------------------------------------------


def standalone_gateway(
    settings: GatewaySettings,
    store: CheckpointStore,
    *,
    host: str,
    port: int,
    token: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> GatewayServer:
    """``event-connector gateway``'s server on ``store`` (unopened), not started.
    ``options``: the rest of :class:`~connector.gateway.GatewayServer`'s (TLS, limits)."""
    from connector.gateway import GatewayServer

    gateway = build_gateway(settings, store)
    return GatewayServer(gateway, host=host, port=port, token=token, **dict(options or {}))


def serve_gateway(server: GatewayServer, store: CheckpointStore, stop: threading.Event) -> None:
    """Open ``store``, retrying one that does not answer yet as ``run`` does (PostgreSQL
    restarting, say; nothing if ``stop`` is set meanwhile), serve until Ctrl-C or SIGTERM
    (open requests are finished and the producer flushed), then close the store."""
    from connector.service import open_retrying

    if not open_retrying(store, stop):
        return
    with Services() as services:
        services.push("checkpoint store", store.close)
        server.run()


# -- the operator commands ---------------------------------------------------------------


def open_tool_store(url: str) -> CheckpointStore:
    """A connector's store, opened for a tool: never created, so a missing one raises
    :class:`~kec.errors.StoreMissing`; the caller closes it."""
    store = open_store(url, create=False)
    store.open()
    return store
