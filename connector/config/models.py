"""The connector's configuration as pydantic models (one YAML file, see docs/architecture.md).

Every model refuses unknown keys, so a typo is an error rather than a silently ignored
setting. Secrets (SASL and key passwords, the PostgreSQL DSN, the HTTP token, and the
``properties`` whose names say secret, see :mod:`connector.common.redaction`) are
:class:`~pydantic.SecretStr`: they print as ``**********`` and are revealed only where a
client needs them (:meth:`KafkaSettings.connection`, :meth:`CheckpointConfig.url`).

Checks across sections (a rule's target and namespace exist, a topic belongs to one
namespace, rule names are unique) live in :func:`cross_check`, which works on plain data
too, so the file loader can report them with their line even when other parts are invalid.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from connector.common.model_base import ConfigModel, NonEmpty
from connector.common.redaction import hide_secrets, reveal, secret_values
from connector.common.retry import RetryPolicy
from connector.config.paths import RelativePath, StatePath
from connector.config.targets import LogSpec, TargetSpec, refusal
from connector.rules import Rule
from connector.rules.limits import (
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_VALUE_LENGTH,
    MAX_JSON_DEPTH,
    MatchLimits,
)
from kec.codec import MAX_EVENT_BYTES
from kec.errors import ConfigError
from kec.event import DEFAULT_NAMESPACE, DEFAULT_TOPIC_PREFIX
from kec.kafka.settings import PIPELINE_FIXED, PRODUCER_FIXED, Connection, fixed

__all__ = [
    "DEFAULT_TARGET",
    "AdminConfig",
    "CheckpointConfig",
    "ConnectorConfig",
    "HttpConfig",
    "KafkaSettings",
    "MetricsConfig",
    "NamespaceConfig",
    "PipelineConfig",
    "RetryConfig",
    "SchemaRegistryConfig",
    "TopicCreationConfig",
    "cross_check",
]

Port = Annotated[int, Field(ge=0, le=65535)]
RecordFormat = Literal["plain", "registry"]
Loc = tuple[str | int, ...]

DEFAULT_HTTP_TOPIC = "http-events"
DEFAULT_HTTP_NAMESPACE = "http"
DEFAULT_TARGET = "log"
"""The target a rule uses when it names none; JSON lines to stdout unless declared."""

# Context key the loader sets after reporting cross_check() errors with their lines.
CROSS_CHECKED = "cross_checked"


class KafkaSettings(ConfigModel):
    """How to reach the Kafka cluster; ``properties`` pass through to librdkafka."""

    bootstrap_servers: NonEmpty
    """The brokers to connect to first, as HOST:PORT[,HOST:PORT...]."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    """How to talk to the brokers (librdkafka security.protocol); default PLAINTEXT."""
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = None
    """The SASL mechanism, with a SASL_* security_protocol."""
    sasl_username: NonEmpty | None = None
    """The SASL user name."""
    sasl_password: SecretStr | None = None
    """The SASL password (a secret: never printed); use ${VAR} to read it from the
    environment."""
    ssl_ca_location: NonEmpty | None = None
    """File of the CA certificate(s) that signed the brokers' certificates."""
    ssl_certificate_location: NonEmpty | None = None
    """The client's certificate file, for TLS client authentication."""
    ssl_key_location: NonEmpty | None = None
    """The client's private key file, for TLS client authentication."""
    ssl_key_password: SecretStr | None = None
    """The password of the client's private key (a secret: never printed)."""
    ssl_endpoint_identification: bool | None = None
    """Check that a broker's certificate names the host connected to (on by default, as
    in librdkafka); false turns the check off, for a test cluster only."""
    sasl_oauthbearer_method: Literal["default", "oidc"] | None = None
    """With sasl_mechanism OAUTHBEARER: oidc fetches tokens from
    sasl_oauthbearer_token_endpoint_url with the client credentials below."""
    sasl_oauthbearer_client_id: NonEmpty | None = None
    """The OIDC client id."""
    sasl_oauthbearer_client_secret: SecretStr | None = None
    """The OIDC client secret (a secret: never printed); ${file:PATH} reads it from a file."""
    sasl_oauthbearer_token_endpoint_url: NonEmpty | None = None
    """The OIDC provider's token endpoint (https://...)."""
    sasl_oauthbearer_scope: NonEmpty | None = None
    """The scope to ask the token for, if the provider wants one."""
    properties: Annotated[
        dict[NonEmpty, str | int | bool | SecretStr],
        AfterValidator(hide_secrets),
        WithJsonSchema(
            {
                "type": "object",
                "additionalProperties": {"type": ["string", "integer", "boolean"]},
            }
        ),
    ] = Field(default_factory=dict)
    """Further librdkafka properties passed to every client as they are (e.g.
    client.rack); settings with a field of their own must be set there. Values whose
    names say secret, password, token or key are secrets: never printed. The pipeline's
    consumer heartbeats every second (heartbeat.interval.ms 1000, not Kafka's 3000, so
    that a rebalance is noticed sooner); a property here overrides that too."""

    @field_validator("properties")
    @classmethod
    def _no_shadowing(cls, properties: dict[str, Any]) -> dict[str, Any]:
        # One place per setting: a secret given as a plain property would escape SecretStr.
        shadowed = sorted(set(properties) & set(_NAMED))
        if shadowed:
            names = ", ".join(f"{p} (use kafka.{_NAMED[p]})" for p in shadowed)
            raise ValueError(f"set these with their own fields: {names}")
        # Refused here rather than when the first client is built (kec.kafka.settings' policy).
        try:
            fixed(properties, {**PIPELINE_FIXED, **PRODUCER_FIXED})
        except ConfigError as exc:
            raise ValueError(f"{exc}: exactly-once depends on it") from exc
        return properties

    @model_validator(mode="after")
    def _oidc_complete(self) -> KafkaSettings:
        if self.sasl_oauthbearer_method == "oidc":
            missing = [
                name
                for name in (
                    "sasl_oauthbearer_client_id",
                    "sasl_oauthbearer_client_secret",
                    "sasl_oauthbearer_token_endpoint_url",
                )
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"sasl_oauthbearer_method oidc needs {', '.join(missing)}")
            if self.sasl_mechanism != "OAUTHBEARER":
                raise ValueError("sasl_oauthbearer_method oidc needs sasl_mechanism OAUTHBEARER")
        return self

    def client_config(self) -> dict[str, Any]:
        """The librdkafka settings, secrets revealed: hand it to a client, never log it."""
        config: dict[str, Any] = {}
        for key, field in _NAMED.items():
            value = getattr(self, field)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bool):  # ssl_endpoint_identification
                value = "https" if value else "none"
            if value is not None:
                config[key] = value
        config.update(reveal(self.properties))
        return config

    def connection(self) -> Connection:
        """This section as the clients' :class:`~kec.kafka.settings.Connection`, secrets
        revealed: hand it to a client, never log its properties."""
        return Connection.of(self.client_config())

    def secrets(self) -> list[str]:
        """Every secret value of this section, to redact from a client library's errors."""
        named = [self.sasl_password, self.ssl_key_password, self.sasl_oauthbearer_client_secret]
        values = [s.get_secret_value() for s in named if s is not None]
        return values + secret_values(self.properties)


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
    "ssl.endpoint.identification.algorithm": "ssl_endpoint_identification",
    "sasl.oauthbearer.method": "sasl_oauthbearer_method",
    "sasl.oauthbearer.client.id": "sasl_oauthbearer_client_id",
    "sasl.oauthbearer.client.secret": "sasl_oauthbearer_client_secret",
    "sasl.oauthbearer.token.endpoint.url": "sasl_oauthbearer_token_endpoint_url",
    "sasl.oauthbearer.scope": "sasl_oauthbearer_scope",
}


class NamespaceConfig(ConfigModel):
    """The topics whose events belong to one namespace (see docs/architecture.md).

    Without ``topics`` a namespace ``N`` reads the one topic ``{topic_prefix}N``, the topic
    :class:`~connector.notification.NotificationClient` writes ``N``'s events to.
    """

    topics: list[NonEmpty] | None = Field(default=None, min_length=1)
    """The topics read for this namespace; default the one topic {topic_prefix}NAME. A
    topic belongs to one namespace."""
    value_format: RecordFormat = "plain"
    """How its records' values are written: plain (UTF-8 text, JSON, or binary as the
    content-type header says) or registry (the schema registry's wire format: Avro,
    Protobuf or JSON Schema, decoded with the writer's schema; needs schema_registry)."""
    key_format: RecordFormat = "plain"
    """How its records' keys are written: plain (UTF-8 text) or registry (a key written
    with a registered schema; the decoded key, as text or JSON, is the event key)."""

    def topics_of(self, namespace: str, topic_prefix: str) -> list[str]:
        return list(self.topics) if self.topics else [f"{topic_prefix}{namespace}"]


class SchemaRegistryConfig(ConfigModel):
    """A schema registry that speaks the Confluent API (Confluent Schema Registry,
    Apicurio Registry's /apis/ccompat/v7, Redpanda, Karapace), for namespaces whose
    ``value_format`` or ``key_format`` is ``registry``."""

    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    """The registry's base URL (for Apicurio: http://HOST:PORT/apis/ccompat/v7)."""
    basic_auth_user_info: SecretStr | None = None
    """USER:PASSWORD for HTTP basic authentication (a secret: never printed); use
    ${file:PATH} to read it from a file."""
    ssl_ca_location: NonEmpty | None = None
    """File of the CA certificate(s) that signed the registry's certificate."""
    ssl_certificate_location: NonEmpty | None = None
    """The client's certificate file, for TLS client authentication."""
    ssl_key_location: NonEmpty | None = None
    """The client's private key file, for TLS client authentication."""
    timeout_seconds: PositiveFloat = 10.0
    """How long one request to the registry may take."""

    def client_conf(self) -> dict[str, Any]:
        """The settings of confluent-kafka's ``SchemaRegistryClient`` (secrets revealed)."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_seconds}
        if self.basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        for key, value in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if value is not None:
                conf[key] = value
        return conf


class CheckpointConfig(ConfigModel):
    """Where checkpoints live: an embedded sqlite file, or a shared PostgreSQL database.

    A relative sqlite ``path`` is relative to the data directory when loaded from a file
    (``--data-dir`` / ``KEC_DATA_DIR``, by default the config file's folder), to the
    working directory otherwise.
    """

    backend: Literal["sqlite", "postgres"] = "sqlite"
    """sqlite: one file, for one running connector; postgres: a database several
    connectors share."""
    path: StatePath = Field(default=Path("checkpoints.db"), validate_default=True)
    """The sqlite file (backend sqlite); relative to the data directory (KEC_DATA_DIR,
    else the config file's folder)."""
    dsn: SecretStr | None = None
    """The PostgreSQL URL, postgresql://USER:PASSWORD@HOST/DB (backend postgres; a
    secret: never printed)."""
    retention_days: PositiveFloat | None = None
    """Prune events and delivered actions older than this many days; default: keep all.
    An event pruned is no longer deduplicated if Kafka delivers it again."""
    lineage: bool = True
    """Keep what `event-connector trace` shows beyond the events and actions themselves:
    a row per failed delivery attempt (and the delivery after one), and when each
    partition's actions were settled (a row a second at most). Pruned with the retention,
    and capped in rows."""

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


class TopicCreationConfig(ConfigModel):
    """Whether the connector creates the topics it needs when they are missing, and how.

    ``run`` creates its namespaces' topics, the HTTP gateway's topic and the dead-letter
    topic; ``send``, ``gateway`` and the notification client create the topic they write
    to. Brokers often run with ``auto.create.topics.enable=false``, so without this a
    connector would wait for topics that never come.
    """

    enabled: bool = True
    """Create missing topics. Turn off where the connector may not create topics: a
    missing topic is then an error that names it (create it with `event-connector topics
    create`)."""
    partitions: PositiveInt = 3
    """Partitions of each topic created; the most connector instances that can share a
    topic's work."""
    replication_factor: int = Field(default=-1, ge=-1)
    """Replicas of each partition of a topic created; -1: the broker's
    default.replication.factor."""

    @field_validator("replication_factor")
    @classmethod
    def _not_zero(cls, factor: int) -> int:
        if factor == 0:
            raise ValueError("must be -1 (the broker's default) or at least 1")
        return factor


class PipelineConfig(ConfigModel):
    """Batching and back-pressure of the pipeline (connector.pipeline.PipelineSettings)."""

    batch_size: PositiveInt = 1000
    """The most records checkpointed in one store transaction (one fsync)."""
    linger_ms: NonNegativeInt = 10
    """How long a poll waits for a record when none has been fetched (at least 10 ms;
    the wait ends when one arrives). Records already fetched are checkpointed at once
    (up to batch_size): a batch is what arrived while the last one was being made
    durable, so light load gets small quick batches and heavy load full ones."""
    outbox_max_pending: PositiveInt = 100_000
    """Actions waiting for delivery beyond which consumption pauses (backpressure)."""
    max_event_bytes: PositiveInt = MAX_EVENT_BYTES
    """A record value larger than this goes to the dead-letter topic, not the store."""
    match_max_value_length: PositiveInt = DEFAULT_MAX_VALUE_LENGTH
    """A longer value (characters of text, bytes of binary) fails every rule value
    condition (connector.rules.limits.MatchLimits)."""
    match_max_json_depth: Annotated[int, Field(ge=1, le=MAX_JSON_DEPTH)] = DEFAULT_MAX_JSON_DEPTH
    """JSON nested deeper is not JSON to rules' `json` predicates."""
    idle_interval: PositiveFloat = 10.0
    """Seconds between two moves of an idle partition's event time to the present (the
    idle rule: time-driven rules fire and all_of sets are pruned without traffic)."""
    instance_id: NonEmpty | None = None
    """A stable id for this instance (Kafka static membership): a restart with the same
    id gets its partitions back at once instead of after the session timeout."""
    processes: PositiveInt | Literal["auto"] = 1
    """Pipeline processes in this instance, each a member of the group with its share of
    the partitions (static member id INSTANCE-pN), under one supervisor that restarts a
    dead one and serves one metrics endpoint, health and gateway. `auto`: the number of
    cores, at most the partitions read. 1: the pipeline runs in the `run` process."""

    def match_limits(self) -> MatchLimits:
        """The bounds to build :class:`connector.rules.trigger.TriggerEngine` with."""
        return MatchLimits(
            max_value_length=self.match_max_value_length, max_json_depth=self.match_max_json_depth
        )


class RetryConfig(ConfigModel):
    """Durable retries of failed deliveries before an action goes to the dead table."""

    max_attempts: PositiveInt = 8
    """Deliveries tried before an action goes to the dead table (`event-connector dlq`)."""
    initial_backoff_seconds: PositiveFloat = 1.0
    """The wait before the second attempt; it doubles with each attempt after that."""
    max_backoff_seconds: PositiveFloat = 300.0
    """The longest wait between two attempts."""

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


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``): only this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _existing_file(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


class HttpConfig(ConfigModel):
    """The HTTP events gateway: where it listens, its bearer token, strict mode, TLS.

    Its events go to ``topic`` and belong to ``namespace``, a namespace of their own that
    rules may name like any other: the section declares it, so it is not listed under
    ``namespaces``. The gateway only writes to the topic; ``run`` with this section reads
    it in its group with its other topics and checkpoints its events, and a send is
    answered once the store holds its event (within ``checkpoint_timeout_seconds``, else
    500). ``run`` serves the gateway too unless started with ``--no-gateway``; a
    standalone ``event-connector gateway`` needs a ``run`` with the same section (the same
    topic and store) to confirm anything. Listening beyond loopback requires ``token``.
    HTTPS: ``tls_cert_file`` and ``tls_key_file`` (PEM; relative to the config file).
    Limits (connector.gateway.limits): a larger body gets 413, deeper JSON 400; past
    ``max_connections`` (long polls included) 503; a connection that has not sent a whole
    request head within ``header_timeout_seconds`` is closed.
    """

    host: NonEmpty = "127.0.0.1"
    """The address to listen on; 0.0.0.0 for every interface."""
    port: Port = 8000
    """The port to listen on; 0 for any free one."""
    # validate_default: the check needs the host, and must run when the token is omitted.
    token: SecretStr | None = Field(default=None, validate_default=True)
    """Require `Authorization: Bearer TOKEN` on every /event/ route (a secret: never
    printed); required when the gateway listens beyond loopback."""
    strict: bool = False
    """Accept an event only when a listener waits for its (workflow_id, event_key)
    (else 404); default: keep early events until their listener comes."""
    topic: NonEmpty = DEFAULT_HTTP_TOPIC
    """The Kafka topic the gateway writes its events to; run reads it with its other
    topics."""
    namespace: NonEmpty = DEFAULT_HTTP_NAMESPACE
    """The namespace of the gateway's events, for rules (declared by this section, not
    listed under namespaces): their key is the body's event_key, their context the URL's
    workflow id."""
    checkpoint_timeout_seconds: PositiveFloat = 15.0
    """How long a send waits for a connector to checkpoint its event before it answers
    500 (the event is in Kafka: a resend with the same Idempotency-Key is safe)."""
    tls_cert_file: Annotated[RelativePath, AfterValidator(_existing_file)] | None = None
    """HTTPS: the server's certificate chain (PEM), with tls_key_file."""
    tls_key_file: Annotated[RelativePath, AfterValidator(_existing_file)] | None = None
    """HTTPS: the certificate's private key (PEM), with tls_cert_file."""
    tls_key_password: SecretStr | None = None
    """The private key's password, when it has one (a secret: never printed)."""
    max_body_bytes: PositiveInt = 1_048_576
    """A larger request body is refused with 413."""
    max_json_depth: Annotated[int, Field(ge=1, le=MAX_JSON_DEPTH)] = 64
    """A request body nested deeper is refused with 400."""
    max_connections: PositiveInt = 1000
    """Connections served at once (long polls included); more get 503."""
    header_timeout_seconds: PositiveFloat = 20.0
    """A connection that has not sent a whole request head in this long is closed."""

    @field_validator("token")
    @classmethod
    def _token_beyond_loopback(
        cls, token: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        return _token_checked(
            token, info, "the gateway", 'take events from anyone (e.g. token: "${GATEWAY_TOKEN}")'
        )

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        if self.tls_key_password is not None and self.tls_key_file is None:
            raise ValueError("tls_key_password without tls_key_file")
        return self


def _token_checked(
    token: SecretStr | None, info: ValidationInfo, server: str, otherwise: str
) -> SecretStr | None:
    """A server's ``token``: not empty, and required when ``host`` is beyond loopback
    (``otherwise``: what the server would allow without one)."""
    if token is not None and not token.get_secret_value():
        raise ValueError("is empty: give a token, or leave it out on a loopback host")
    host = info.data.get("host")
    if token is None and isinstance(host, str) and not is_loopback_host(host):
        raise ValueError(
            f"required: {server} listens on {host}, beyond loopback, and would {otherwise}"
        )
    return token


class MetricsConfig(ConfigModel):
    """Where the Prometheus metrics endpoint listens."""

    host: NonEmpty = "127.0.0.1"
    """The address to serve GET /metrics on: loopback by default (this host only, a
    container's own health check included); 0.0.0.0 for every interface, for a Prometheus
    scraping from elsewhere."""
    port: Port = 9464
    """The port to serve GET /metrics on."""


class AdminConfig(ConfigModel):
    """The admin HTTP API (/api/v1/, its OpenAPI document at /api/v1/openapi.json) and
    the web console on it (/), served by run: status, partitions, lag, lineage, dead
    letters and their replay, pause/resume of rules and targets, config reload. Listening
    beyond loopback requires ``token``; on loopback without one it is open to this host."""

    host: NonEmpty = "127.0.0.1"
    """The address to listen on: loopback by default (this host only); 0.0.0.0 for every
    interface (then token is required)."""
    port: Port = 8081
    """The port to listen on; 0 for any free one."""
    token: SecretStr | None = Field(default=None, validate_default=True)
    """Require `Authorization: Bearer TOKEN` on the API (the console asks for it once, on
    its login page); a secret, never printed. Required beyond loopback."""

    @field_validator("token")
    @classmethod
    def _token_beyond_loopback(
        cls, token: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        return _token_checked(
            token, info, "the admin API",
            'let anyone replay and pause (e.g. token: "${file:admin-token}")',
        )  # fmt: skip


class ConnectorConfig(ConfigModel):
    """One connector: what it reads, where it checkpoints, its rules and their targets."""

    # What ${file:PATH} references read (the loader sets it): secrets wherever they landed.
    _file_secrets: tuple[str, ...] = PrivateAttr(default=())

    @property
    def file_secrets(self) -> tuple[str, ...]:
        return self._file_secrets

    def keep_file_secrets(self, values: tuple[str, ...]) -> None:
        """For the loader: what this file's ``${file:}`` references read."""
        self._file_secrets = tuple(values)

    def secrets(self) -> list[str]:
        """Every secret this config holds, revealed, to redact from what is printed: the
        values ``${file:}`` read and every secret setting (passwords, tokens, keys, the
        secret parts of a DSN)."""
        return [*self._file_secrets, *_secret_strings(self)]

    kafka: KafkaSettings
    """How to reach the Kafka cluster."""
    group_id: NonEmpty = "event-connector"
    """The consumer group of the pipeline; instances with the same group share the
    partitions."""
    # Never the pipeline's group, whose subscribed members would make Kafka refuse the
    # listener's member-less commits.
    listener_group_id: NonEmpty | None = None
    """The consumer group of QueueEventListener (Ray-style listeners reading this
    file); default <group_id>-listener."""
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    """Namespace NAME reads topic {topic_prefix}NAME unless it lists its topics."""
    namespaces: dict[NonEmpty, NamespaceConfig] = Field(min_length=1)
    """The namespaces the connector reads, by name; an event reaches only the rules of
    its own namespace."""
    # Validated from {} rather than built: the default sqlite path must be resolved against
    # the file's directory too, as with `checkpoint: {}`, not against the working directory.
    checkpoint: CheckpointConfig = Field(default_factory=dict, validate_default=True)
    """Where events, offsets and the outbox are stored durably."""
    dead_letter_topic: NonEmpty | None = None
    """Where records that cannot become events go, with the reason in their headers;
    default: recorded in the store only."""
    topic_creation: TopicCreationConfig = Field(default_factory=TopicCreationConfig)
    """Whether missing topics are created, with how many partitions and replicas."""
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    """Batching and backpressure."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    """How failed deliveries are retried."""
    targets: dict[NonEmpty, TargetSpec] = Field(default_factory=dict, validate_default=True)
    """Where actions go, by name; `log` (JSON lines to stdout) exists unless redefined."""
    rules: list[Rule] = Field(default_factory=list)
    """The trigger rules: which events fire which actions."""
    http: HttpConfig | None = None
    """The HTTP events gateway (POST /event/send_event/WORKFLOW_ID): run reads its topic
    and serves it beside the pipeline (unless --no-gateway)."""
    metrics: MetricsConfig | None = None
    """Serve Prometheus metrics (GET /metrics)."""
    admin: AdminConfig | None = None
    """Serve the admin HTTP API and its web console."""
    schema_registry: SchemaRegistryConfig | None = None
    """The schema registry of the namespaces whose value_format or key_format is
    registry."""

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
        problems = cross_check(
            namespaces,
            {name: spec.type for name, spec in self.targets.items()},
            [(r.name, r.namespace, r.target, r.action.value) for r in self.rules],
            http=(self.http.namespace, self.http.topic) if self.http is not None else None,
            registry_formats={
                ns: [f for f in FORMAT_FIELDS if getattr(spec, f) == "registry"]
                for ns, spec in self.namespaces.items()
            },
            has_registry=self.schema_registry is not None,
        )
        if problems:
            raise ValueError("; ".join(f"{_dotted(loc)}: {msg}" for loc, msg in problems))
        return self

    def listener_group(self) -> str:
        """The consumer group of the Kafka listener that reads this file
        (:class:`connector.queue_listener.QueueEventListener`)."""
        return self.listener_group_id or f"{self.group_id}-listener"

    def written_files(self) -> list[tuple[str, Path]]:
        """``(setting, path)`` of every file ``run`` writes besides Kafka: checked before
        anything opens (:func:`connector.config.paths.check_writable`)."""
        files: list[tuple[str, Path]] = []
        if self.checkpoint.backend == "sqlite":
            files.append(("checkpoint.path", self.checkpoint.path))
        for name, spec in self.targets.items():
            if isinstance(spec, LogSpec) and spec.path is not None:
                where = f".{name}" if name.isidentifier() else f'["{name}"]'
                files.append((f"targets{where}.path", spec.path))
        return files

    def registry_topics(self) -> tuple[frozenset[str], frozenset[str]]:
        """The topics whose keys, and those whose values, are in the registry's format."""
        keys: set[str] = set()
        values: set[str] = set()
        for ns, spec in self.namespaces.items():
            topics = spec.topics_of(ns, self.topic_prefix)
            if spec.key_format == "registry":
                keys.update(topics)
            if spec.value_format == "registry":
                values.update(topics)
        return frozenset(keys), frozenset(values)

    def topics(self) -> dict[str, str]:
        """Topic -> namespace of its events, for every topic the pipeline reads: the
        namespaces' and, with ``http:``, the gateway's."""
        topics = {
            topic: ns
            for ns, spec in self.namespaces.items()
            for topic in spec.topics_of(ns, self.topic_prefix)
        }
        if self.http is not None:
            topics[self.http.topic] = self.http.namespace
        return topics


RuleFacts = tuple[str | None, str | None, str | None, str | None]
FORMAT_FIELDS = ("value_format", "key_format")


def cross_check(
    namespaces: Mapping[str, Iterable[str]],
    targets: Mapping[str, str | None],
    rules: Iterable[RuleFacts | None],
    *,
    http: tuple[str, str] | None = None,
    registry_formats: Mapping[str, Iterable[str]] | None = None,
    has_registry: bool = False,
) -> list[tuple[Loc, str]]:
    """Errors across sections, each with the location (field path) it belongs to.

    ``http``: the gateway's (namespace, topic) with an ``http:`` section, a namespace
    declared by that section (listing it under ``namespaces`` too is an error).

    ``targets`` maps each declared target to its ``type`` (``None`` when unknown);
    ``rules`` gives each rule's (name, namespace, target, action), ``None`` where not
    given, and ``None`` for a rule too broken to check. A rule whose action its target's
    type can never carry out (a task action on ``prefect``) is an error of ``action``.
    ``registry_formats``: each namespace's format fields set to ``registry``, an error
    unless ``has_registry`` (a ``schema_registry:`` section).
    """
    problems: list[tuple[Loc, str]] = []
    if not has_registry:
        for ns, fields in (registry_formats or {}).items():
            for f in fields:
                problems.append(
                    (
                        ("namespaces", ns, f),
                        "registry needs a schema_registry: section (its url) to fetch the "
                        "schemas from",
                    )
                )
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
    known_namespaces = set(namespaces)
    if http is not None:
        http_ns, http_topic = http
        if http_ns in namespaces:
            problems.append(
                (
                    ("namespaces", http_ns),
                    f"namespace {http_ns!r} is the HTTP gateway's (http.namespace), declared "
                    "by the http: section: do not list it here",
                )
            )
        elif http_topic in owner:
            problems.append(
                (
                    ("http", "topic"),
                    f"topic {http_topic!r} already belongs to namespace {owner[http_topic]!r}",
                )
            )
        known_namespaces.add(http_ns)
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
        if namespace not in known_namespaces:
            declared = ", ".join(sorted(known_namespaces)) or "none"
            problems.append(
                (
                    ("rules", i, "namespace"),
                    f"unknown namespace {namespace!r} (declared: {declared})",
                )
            )
    return problems


def _dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _secret_strings(node: object) -> list[str]:
    """The revealed values of every SecretStr in a model, its lists and its mappings."""
    if isinstance(node, SecretStr):
        value = node.get_secret_value()
        return [value] if value else []
    if isinstance(node, BaseModel):
        return [s for name in type(node).model_fields for s in _secret_strings(getattr(node, name))]
    if isinstance(node, Mapping):
        return [s for value in node.values() for s in _secret_strings(value)]
    if isinstance(node, list | tuple):
        return [s for value in node for s in _secret_strings(value)]
    return []
