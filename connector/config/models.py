"""The connector's configuration as pydantic models (one YAML file, design §1).

Every model refuses unknown keys, so a typo is an error rather than a silently ignored
setting. Secrets (SASL and key passwords, the PostgreSQL DSN, the HTTP token) are
:class:`~pydantic.SecretStr`: they print as ``**********`` and are revealed only where a
client needs them (:meth:`KafkaSettings.client_config`, :meth:`CheckpointConfig.url`).

Checks across sections (a rule's target and namespace exist, a topic belongs to one
namespace, rule names are unique) live in :func:`cross_check`, which works on plain data
too, so the file loader can report them with their line even when other parts are invalid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connector.outbox import RetryPolicy
from connector.rules import Rule
from connector.targets import LogSpec, RelativePath, TargetSpec, refusal
from kec.event import DEFAULT_NAMESPACE, DEFAULT_TOPIC_PREFIX

__all__ = [
    "DEFAULT_TARGET",
    "CheckpointConfig",
    "ConnectorConfig",
    "HttpConfig",
    "KafkaSettings",
    "MetricsConfig",
    "NamespaceConfig",
    "PipelineConfig",
    "RetryConfig",
    "cross_check",
]

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
Port = Annotated[int, Field(ge=0, le=65535)]
Loc = tuple[str | int, ...]

DEFAULT_HTTP_TOPIC = "http-events"
DEFAULT_HTTP_NAMESPACE = "http"
DEFAULT_TARGET = "log"
"""The target a rule uses when it names none; JSON lines to stdout unless declared."""

# Context key the loader sets after reporting cross_check() errors with their lines.
CROSS_CHECKED = "cross_checked"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Model):
    """How to reach the Kafka cluster; ``properties`` pass through to librdkafka."""

    bootstrap_servers: NonEmpty
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = None
    sasl_username: NonEmpty | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: NonEmpty | None = None
    ssl_certificate_location: NonEmpty | None = None
    ssl_key_location: NonEmpty | None = None
    ssl_key_password: SecretStr | None = None
    properties: dict[NonEmpty, str | int | bool] = Field(default_factory=dict)

    @field_validator("properties")
    @classmethod
    def _no_shadowing(cls, properties: dict[str, Any]) -> dict[str, Any]:
        # One place per setting: a secret given as a plain property would escape SecretStr.
        shadowed = sorted(set(properties) & set(_NAMED))
        if shadowed:
            names = ", ".join(f"{p} (use kafka.{_NAMED[p]})" for p in shadowed)
            raise ValueError(f"set these with their own fields: {names}")
        return properties

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings, secrets revealed: hand it to a client, never log it."""
        config: dict[str, Any] = {}
        for key, field in _NAMED.items():
            value = getattr(self, field)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                config[key] = value
        config.update(self.properties)
        return config


# librdkafka name -> KafkaSettings field.
_NAMED = {
    "bootstrap.servers": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "ssl.ca.location": "ssl_ca_location",
    "ssl.certificate.location": "ssl_certificate_location",
    "ssl.key.location": "ssl_key_location",
    "ssl.key.password": "ssl_key_password",
}


class NamespaceConfig(_Model):
    """The topics whose events belong to one namespace (design §3).

    Without ``topics`` a namespace ``N`` reads the one topic ``{topic_prefix}N``, the topic
    :class:`~connector.notification.NotificationClient` writes ``N``'s events to.
    """

    topics: list[NonEmpty] | None = Field(default=None, min_length=1)

    def topics_of(self, namespace: str, topic_prefix: str) -> list[str]:
        return list(self.topics) if self.topics else [f"{topic_prefix}{namespace}"]


class CheckpointConfig(_Model):
    """Where checkpoints live: an embedded sqlite file, or a shared PostgreSQL database.

    A relative sqlite ``path`` is relative to the config file's directory when loaded
    from a file (to the working directory otherwise).
    """

    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: RelativePath = Field(default=Path("checkpoints.db"), validate_default=True)
    dsn: SecretStr | None = None
    # Prune events and done actions older than this (connector.retention); None: never.
    retention_days: PositiveFloat | None = None

    @field_validator("dsn")
    @classmethod
    def _postgres_url(cls, dsn: SecretStr | None) -> SecretStr | None:
        if dsn is not None and not dsn.get_secret_value().startswith(
            ("postgresql://", "postgres://")
        ):
            raise ValueError("must be a postgresql:// URL")
        return dsn

    @model_validator(mode="after")
    def _backend_fields(self) -> CheckpointConfig:
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError("backend `postgres` needs a dsn")
        if self.backend == "sqlite" and self.dsn is not None:
            raise ValueError("backend `sqlite` takes a path, not a dsn")
        if self.backend == "postgres" and "path" in self.model_fields_set:
            raise ValueError("backend `postgres` takes a dsn, not a path")
        return self

    def url(self) -> str:
        """The URL for :func:`checkpoint.open_store` (reveals the DSN's password)."""
        if self.backend == "postgres":
            assert self.dsn is not None  # the validator guarantees it
            return self.dsn.get_secret_value()
        return f"sqlite://{self.path}"  # an absolute path gives sqlite:///...


class PipelineConfig(_Model):
    """Batching and back-pressure of the pipeline (connector.runtime.PipelineSettings)."""

    batch_size: PositiveInt = 1000
    linger_ms: NonNegativeInt = 10
    outbox_max_pending: PositiveInt = 100_000
    dispatch_chunk: PositiveInt = 256
    # A larger record value goes to the dead-letter topic instead of the store.
    max_event_bytes: PositiveInt = 1_048_576
    # Kafka static membership: a restart with the same id resumes its partitions at once.
    instance_id: NonEmpty | None = None


class RetryConfig(_Model):
    """Durable retries of failed deliveries before an action goes to the dead table."""

    max_attempts: PositiveInt = 8
    initial_backoff_seconds: PositiveFloat = 1.0
    max_backoff_seconds: PositiveFloat = 300.0

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds is less than initial_backoff_seconds")
        return self

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=self.initial_backoff_seconds,
            max_delay=self.max_backoff_seconds,
        )


class HttpConfig(_Model):
    """The HTTP events gateway: where it listens, its bearer token, strict mode.

    Its events go to ``topic`` and belong to ``namespace``, a namespace of their own that
    rules may name like any other (the gateway checkpoints that topic itself, so it must
    not be listed under ``namespaces``).
    """

    host: NonEmpty = "127.0.0.1"
    port: Port = 8000
    token: SecretStr | None = None
    strict: bool = False
    topic: NonEmpty = DEFAULT_HTTP_TOPIC
    namespace: NonEmpty = DEFAULT_HTTP_NAMESPACE


class MetricsConfig(_Model):
    """Where the Prometheus metrics endpoint listens."""

    host: NonEmpty = "127.0.0.1"
    port: Port = 9464


class ConnectorConfig(_Model):
    """One connector: what it reads, where it checkpoints, its rules and their targets."""

    kafka: KafkaSettings
    group_id: NonEmpty = "event-connector"
    # The group of QueueEventListener (Ray-style listeners): never the pipeline's group,
    # whose subscribed members would make Kafka refuse the listener's member-less commits.
    listener_group_id: NonEmpty | None = None
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    namespaces: dict[NonEmpty, NamespaceConfig] = Field(min_length=1)
    # Validated from {} rather than built: the default sqlite path must be resolved against
    # the file's directory too, as with `checkpoint: {}`, not against the working directory.
    checkpoint: CheckpointConfig = Field(default_factory=dict, validate_default=True)
    dead_letter_topic: NonEmpty | None = None
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    targets: dict[NonEmpty, TargetSpec] = Field(default_factory=dict, validate_default=True)
    rules: list[Rule] = Field(default_factory=list)
    http: HttpConfig | None = None
    metrics: MetricsConfig | None = None

    @field_validator("listener_group_id")
    @classmethod
    def _own_group(cls, group: str | None, info: ValidationInfo) -> str | None:
        if group is not None and group == info.data.get("group_id"):
            raise ValueError("must differ from group_id (the pipeline's group)")
        return group

    @field_validator("namespaces", mode="before")
    @classmethod
    def _bare_namespaces(cls, namespaces: Any) -> Any:
        # `default:` with nothing after it reads as null in YAML; it means "no settings".
        if isinstance(namespaces, dict):
            return {ns: {} if spec is None else spec for ns, spec in namespaces.items()}
        return namespaces

    @field_validator("targets")
    @classmethod
    def _default_target(cls, targets: dict[str, Any]) -> dict[str, Any]:
        # Rules name `log` unless told otherwise, so it always exists (stdout by default).
        if DEFAULT_TARGET not in targets:
            targets = {DEFAULT_TARGET: LogSpec(type="log"), **targets}
        return targets

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ConnectorConfig:
        if isinstance(info.context, dict) and info.context.get(CROSS_CHECKED):
            return self
        namespaces = {
            ns: spec.topics_of(ns, self.topic_prefix) for ns, spec in self.namespaces.items()
        }
        if self.http is not None:
            namespaces.setdefault(self.http.namespace, []).append(self.http.topic)
        problems = cross_check(
            namespaces,
            {name: spec.type for name, spec in self.targets.items()},
            [(r.name, r.namespace, r.target, r.action.value) for r in self.rules],
        )
        if problems:
            raise ValueError("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))
        return self

    def listener_group(self) -> str:
        """The consumer group of :class:`listeners.QueueEventListener` for this file."""
        return self.listener_group_id or f"{self.group_id}-listener"

    def topics(self) -> dict[str, str]:
        """Topic -> namespace of its events, for every configured topic."""
        return {
            topic: ns
            for ns, spec in self.namespaces.items()
            for topic in spec.topics_of(ns, self.topic_prefix)
        }


RuleFacts = tuple[str | None, str | None, str | None, str | None]


def cross_check(
    namespaces: Mapping[str, Iterable[str]],
    targets: Mapping[str, str | None],
    rules: Iterable[RuleFacts | None],
) -> list[tuple[Loc, str]]:
    """Errors across sections, each with the location (field path) it belongs to.

    ``targets`` maps each declared target to its ``type`` (``None`` when unknown);
    ``rules`` gives each rule's (name, namespace, target, action), ``None`` where not
    given, and ``None`` for a rule too broken to check. A rule whose action its target's
    type can never carry out (a task action on ``prefect``) is an error of ``action``.
    """
    problems: list[tuple[Loc, str]] = []
    owner: dict[str, str] = {}
    for ns, topics in namespaces.items():
        for i, topic in enumerate(topics):
            if topic in owner:
                problems.append(
                    (
                        ("namespaces", ns, "topics", i),
                        f"topic {topic!r} already belongs to namespace {owner[topic]!r}",
                    )
                )
            else:
                owner[topic] = ns
    known_targets = {DEFAULT_TARGET, *targets}
    listed = list(rules)
    counts = Counter(r[0] for r in listed if r is not None and r[0] is not None)
    for i, rule in enumerate(listed):
        if rule is None:
            continue
        name, namespace, target, action = rule
        if name is not None and counts[name] > 1:
            problems.append((("rules", i, "name"), f"rule name {name!r} is used more than once"))
        target = target if target is not None else DEFAULT_TARGET
        if target not in known_targets:
            declared = ", ".join(sorted(known_targets))
            problems.append(
                (("rules", i, "target"), f"unknown target {target!r} (declared: {declared})")
            )
        elif action is not None and (kind := targets.get(target)) is not None:
            why = refusal(kind, action)
            if why is not None:
                problems.append(
                    (
                        ("rules", i, "action"),
                        f"target {target!r} ({kind}) cannot take action {action!r}: {why}",
                    )
                )
        namespace = namespace if namespace is not None else DEFAULT_NAMESPACE
        if namespace not in namespaces:
            declared = ", ".join(sorted(namespaces)) or "none"
            problems.append(
                (
                    ("rules", i, "namespace"),
                    f"unknown namespace {namespace!r} (declared: {declared})",
                )
            )
    return problems


def _dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
