"""Which target each type of settings builds: :func:`build_target`.

The settings are the config's models (:mod:`connector.config.targets`, which import no
target); this is the one place that knows which class carries out which ``type``.
Building does no I/O: call ``open()`` on the result. The engine targets are imported
only when one is built (``temporal`` needs an extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from pydantic import SecretStr

from connector.common.redaction import reveal
from connector.common.template import Template
from connector.config.targets import (
    AirflowSpec,
    AnyTargetSpec,
    CommandSpec,
    KafkaSpec,
    LogSpec,
    PrefectSpec,
    PythonSpec,
    TemporalSpec,
    WebhookSpec,
    parse_target,
)
from connector.targets.base import FlowLimits, Target
from connector.targets.command import CommandTarget
from connector.targets.kafka import KafkaTarget
from connector.targets.log import LogTarget
from connector.targets.python import PythonTarget
from connector.targets.webhook import WebhookTarget
from kec.errors import ConfigError
from kec.kafka.settings import Connection

__all__ = ["build_target"]


def build_target(
    name: str, spec: AnyTargetSpec | Mapping[str, Any], *, connection: Connection | None = None
) -> Target:
    """The target named ``name`` that ``spec`` describes, unopened. ``connection``: the
    connector's own Kafka cluster and client settings, for a ``kafka`` target that names
    no ``bootstrap_servers``.

    ``spec`` is a validated model (a loaded config's ``targets``) or a mapping keyed by
    its ``type``, validated first (:func:`~connector.config.targets.parse_target`: one
    :class:`~kec.errors.ConfigError` naming the target and each field path).
    """
    settings = parse_target(name, spec) if isinstance(spec, Mapping) else spec
    target = _build(name, settings, connection)
    rate = settings.rate
    target.flow = FlowLimits(
        max_in_flight=settings.max_in_flight,
        per_second=rate.per_second if rate is not None else None,
        burst=rate.burst if rate is not None else None,
        per_key=rate.per_key if rate is not None else False,
    )
    return target


def _build(name: str, settings: AnyTargetSpec, connection: Connection | None) -> Target:
    match settings:
        case LogSpec():
            return LogTarget(name, settings.path, fsync=settings.fsync)
        case CommandSpec():
            return _command(name, settings)
        case WebhookSpec():
            return WebhookTarget(
                name,
                settings.url,
                headers=reveal(settings.headers),
                timeout=settings.timeout,
                verify=settings.verify,
                concurrency=settings.concurrency,
                template=_template(settings.template),
                http2=settings.http2,
            )
        case KafkaSpec():
            servers, properties = settings.bootstrap_servers, reveal(settings.properties)
            if servers is None:
                if connection is None:
                    raise ConfigError(
                        f"kafka target {name!r}: bootstrap_servers is required outside a "
                        "config file (whose kafka: section it would use)"
                    )
                servers = connection.bootstrap_servers
                properties = {**connection.properties, **properties}
            return KafkaTarget(
                name,
                settings.topic,
                servers,
                properties=properties,
                flush_timeout=settings.flush_timeout,
                template=_template(settings.template),
            )
        case PythonSpec():
            return PythonTarget(name, settings.function)
        case TemporalSpec():
            return _temporal(name, settings)
        case AirflowSpec():
            return _airflow(name, settings)
        case PrefectSpec():
            return _prefect(name, settings)
        case _:
            assert_never(settings)


def _secret(value: SecretStr | None) -> str | None:
    # Empty means none, so `${TOKEN:-}` in a file can leave a credential out.
    return (value.get_secret_value() or None) if value is not None else None


def _command(name: str, spec: CommandSpec) -> Target:
    target = CommandTarget(
        name,
        spec.argv,
        timeout=spec.timeout,
        stdin=spec.stdin,
        reject_exit_codes=spec.reject_exit_codes,
        env=reveal(spec.env),
        inherit_env=spec.inherit_env,
        cwd=spec.cwd,
        shell=spec.shell,
    )
    target.concurrency = spec.concurrency
    return target


def _temporal(name: str, spec: TemporalSpec) -> Target:
    try:
        from connector.targets.temporal import TemporalTarget
    except ImportError as exc:
        raise ConfigError(
            f"target {name!r}: the temporal target needs the Temporal SDK:"
            f" pip install 'kafka-event-connector[temporal]' ({exc})"
        ) from exc
    return TemporalTarget(
        name,
        spec.address,
        namespace=spec.namespace,
        task_queue=spec.task_queue,
        workflows=spec.workflows,
        api_key=_secret(spec.api_key),
        tls=spec.tls,
        id_prefix=spec.id_prefix,
        update=spec.update,
        stop=spec.stop,
        rpc_timeout=spec.rpc_timeout,
        concurrency=spec.concurrency,
        template=_template(spec.template),
    )


def _airflow(name: str, spec: AirflowSpec) -> Target:
    from connector.targets.airflow import AirflowTarget

    return AirflowTarget(
        name,
        spec.url,
        username=spec.username,
        password=_secret(spec.password),
        token=_secret(spec.token),
        dags=spec.dags,
        run_id_prefix=spec.run_id_prefix,
        start_option=spec.start_option,
        gate_settle=spec.gate_settle_seconds,
        timeout=spec.timeout,
        verify=spec.verify,
        concurrency=spec.concurrency,
        template=_template(spec.template),
    )


def _prefect(name: str, spec: PrefectSpec) -> Target:
    from connector.targets.prefect import PrefectTarget

    return PrefectTarget(
        name,
        spec.url,
        api_key=_secret(spec.api_key),
        deployments=spec.deployments,
        event_parameter=spec.event_parameter,
        key_prefix=spec.key_prefix,
        timeout=spec.timeout,
        verify=spec.verify,
        concurrency=spec.concurrency,
        template=_template(spec.template),
    )


def _template(source: object) -> Template | None:
    return Template(source) if source is not None else None
