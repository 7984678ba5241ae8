"""The settings of each target type, as the config file's ``targets:`` gives them.

Pydantic models only: this module imports no target. The targets themselves are in
:mod:`connector.targets`, and :func:`connector.targets.registry.build_target` makes one
from its settings. A config file's targets, chosen by ``type``::

    targets:
      audit:   {type: log, path: /var/log/kec/actions.jsonl, fsync: true}
      deploy:  {type: command, argv: [/usr/local/bin/deploy, --quiet], timeout: 60,
                stdin: true, reject_exit_codes: [2], env: {STAGE: prod},
                inherit_env: [AWS_PROFILE, "AWS_CONFIG_*"]}
      engine:  {type: webhook, url: "https://engine.example/api/actions",
                headers: {Authorization: "Bearer …"}, timeout: 10}
      actions: {type: kafka, topic: actions, bootstrap_servers: "kafka:9092",
                properties: {compression.type: zstd}, flush_timeout: 30}
      hook:    {type: python, function: "myapp.hooks:on_action"}
      orders:  {type: temporal, address: "temporal:7233", task_queue: orders,
                workflows: {order: OrderWorkflow}, api_key: "${TEMPORAL_API_KEY}"}
      dags:    {type: airflow, url: "http://airflow:8080", username: kec,
                password: "${AIRFLOW_PASSWORD}", dags: {order: kec_orders}}
      flows:   {type: prefect, url: "http://prefect:4200/api",
                deployments: {order: on-order/kec-example}}

The engine targets (``temporal``, ``airflow``, ``prefect``) take ``concurrency``: how many
actions (of different keys) may be in flight to the engine at once.

Every target takes flow control: ``max_in_flight`` (actions in flight across its calls,
never above) and ``rate: {per_second, burst, per_key}`` (a token bucket for the target,
or one per event key); the actions held back wait in the outbox::

      slow:    {type: webhook, url: "https://slow.example/hook", max_in_flight: 4,
                rate: {per_second: 50, burst: 10}}

Values of ``headers``, ``env`` and ``properties`` whose names say they are secrets
(password, secret, token, key, auth…: :mod:`connector.common.redaction`) are kept as
:class:`~pydantic.SecretStr` and never printed; the registry reveals them to the target.

Each model refuses extra fields, so the config's schema embeds :data:`TargetSpec`;
:func:`parse_target` turns a mapping's errors into one :class:`~kec.errors.ConfigError`
that names the target and each field path, and :func:`refusal` says which actions a
type can never carry out (a config error, found before anything starts).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from connector.common.model_base import ConfigModel, NonEmpty
from connector.common.redaction import HiddenProperties, HiddenStrings, redact_url
from connector.common.template import Template, has_placeholder
from connector.config.paths import RelativePath, StatePath
from kec.action import ActionKind
from kec.errors import ConfigError

__all__ = [
    "AirflowSpec",
    "AnyTargetSpec",
    "CommandSpec",
    "KafkaSpec",
    "LogSpec",
    "PrefectSpec",
    "PythonSpec",
    "RateSpec",
    "TargetSpec",
    "TemporalSpec",
    "WebhookSpec",
    "parse_target",
    "refusal",
]

ExitCode = Annotated[int, Field(ge=1, le=255)]


def _check_template(source: JsonValue) -> JsonValue:
    if source is not None:
        Template(source)  # raises ValueError naming the placeholder
    return source


def _check_object_template(source: JsonValue) -> JsonValue:
    # Airflow's conf and Prefect's parameters are objects: a list or a scalar never fits.
    if source is not None and not isinstance(source, dict):
        raise ValueError("must be a mapping (the engine takes named values)")
    return _check_template(source)


class RateSpec(ConfigModel):
    """A token bucket: ``per_second`` actions a second on average, ``burst`` at once."""

    per_second: PositiveFloat
    """Actions a second the target is given, on average."""
    burst: Annotated[float, Field(ge=1)] | None = None
    """Actions that may go at once after a quiet spell (the bucket's size); default
    per_second, at least 1."""
    per_key: bool = False
    """One bucket per event key of the target instead of one for the whole target."""


class _Spec(ConfigModel):
    # Action kinds the target cannot carry out at all, with why: refused at config time.
    refuses: ClassVar[dict[ActionKind, str]] = {}

    max_in_flight: PositiveInt | None = None
    """Actions handed to the target and not answered yet, across its calls, never more
    than this (default: concurrency x batch size). Actions held back wait in the outbox
    and count towards pipeline.outbox_max_pending (backpressure)."""
    rate: RateSpec | None = None
    """A rate limit, {per_second, burst, per_key}: actions beyond it wait in the outbox
    (backpressure), none is dropped."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A URL may hold a secret (its path, query or user:password@): shown redacted.
        for field, value in super().__repr_args__():
            yield field, redact_url(value) if field == "url" else value


class LogSpec(_Spec):
    """JSON lines to ``path`` (stdout when absent)."""

    type: Literal["log"]
    """log: one JSON line per action."""
    path: StatePath | None = None
    """The file to append to (relative to the data directory: KEC_DATA_DIR, else the
    config file's folder); default stdout."""
    fsync: bool = False
    """fsync after each write, so a delivered action survives a power loss."""


class CommandSpec(_Spec):
    """A process per action; ``argv`` is a list, or one string with ``shell: true``.

    Its environment: ``PATH``, ``HOME``, ``LANG``, ``LC_*`` and ``TZ`` of the connector's,
    the names (or globs) in ``inherit_env``, then ``env``, then the action's ``KEC_*``.
    ``stdin: true`` writes the action's JSON to stdin (instead of ``KEC_ACTION_JSON``).
    """

    type: Literal["command"]
    """command: run a process per action, the action in its environment (KEC_*)."""
    argv: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)]
    """The program and its arguments as a list; one string with shell: true. An
    argument may hold {{ PATH }} placeholders filled from the action (value.order_id,
    event_key, context...), each filled into its one argument, never through a shell."""
    timeout: PositiveFloat = 30.0
    """Seconds the process may run before it is killed and the attempt fails."""
    stdin: bool = False
    """Also write the action as JSON to the process's standard input."""
    reject_exit_codes: frozenset[ExitCode] = frozenset()
    """Exit codes that mean "refused for good": no retry, the action goes dead."""
    env: HiddenStrings = Field(default_factory=dict)
    """Extra environment variables for the process (values whose names say secret,
    password, token or key are never printed)."""
    inherit_env: list[NonEmpty] = Field(default_factory=list)
    """Names (or globs) of the connector's environment variables the process also gets;
    ["*"] for all of them."""
    cwd: RelativePath | None = None
    """The working directory (relative to the config file); default the connector's."""
    shell: bool = False
    """Run argv (one string) through /bin/sh."""
    concurrency: PositiveInt = 4
    """How many processes may run at once (for actions of different keys)."""

    @field_validator("argv")
    @classmethod
    def _argument_templates(cls, argv: str | list[str]) -> str | list[str]:
        if isinstance(argv, str):
            return argv  # one string is for the shell, checked with shell
        if has_placeholder(argv[0]):
            raise ValueError("the program itself cannot be a template")
        for arg in argv[1:]:
            if has_placeholder(arg):
                Template(arg)  # raises ValueError naming the placeholder
        return argv

    @field_validator("shell")
    @classmethod
    def _no_shell_templates(cls, shell: bool, info: ValidationInfo) -> bool:
        argv = info.data.get("argv")
        if shell and isinstance(argv, str) and has_placeholder(argv):
            raise ValueError(
                "{{ }} placeholders in argv cannot be used with shell (a value could inject "
                "a command): use the KEC_* variables"
            )
        return shell


class WebhookSpec(_Spec):
    """HTTP POST to ``url`` with ``headers``; ``timeout`` bounds connecting, then sending
    and reading the answer; ``concurrency`` requests in flight at once (actions of
    different keys)."""

    type: Literal["webhook"]
    """webhook: an HTTP POST per action, with an Idempotency-Key header."""
    url: NonEmpty
    """Where to POST the action as JSON."""
    headers: HiddenStrings = Field(default_factory=dict)
    """Extra request headers (e.g. Authorization; secret-looking ones are never printed)."""
    timeout: PositiveFloat = 10.0
    """Seconds to connect, and then to send a request and read its answer."""
    verify: bool = True
    """Check the server's TLS certificate."""
    concurrency: PositiveInt = 16
    """How many requests may be in flight at once (actions of different keys), on one
    event loop: for a receiver answering in T seconds, at most concurrency / T a second."""
    template: Annotated[JsonValue, AfterValidator(_check_template)] = None
    """The body to POST instead of the action: JSON whose strings may hold {{ PATH }}
    placeholders (value.order_id, event_key, action_id, context, events.paid.value...)."""
    http2: bool = False
    """Offer HTTP/2 to an https receiver (TLS ALPN): where it accepts, up to 100 requests
    in flight share a connection, for receivers that limit connections; it costs the
    connector more CPU a request than HTTP/1.1. Plain http is always HTTP/1.1."""


class KafkaSpec(_Spec):
    """Records to ``topic``; ``properties`` are extra librdkafka producer settings."""

    type: Literal["kafka"]
    """kafka: a record per action (idempotent producer, action-id header)."""
    topic: NonEmpty
    """The topic the actions are written to."""
    bootstrap_servers: NonEmpty | None = None
    """The cluster of that topic, HOST:PORT[,HOST:PORT...]. Default: the connector's own
    cluster, reached with its `kafka:` section (SASL, TLS and the other settings)."""
    properties: HiddenProperties = Field(default_factory=dict)
    """Extra librdkafka producer properties (e.g. compression.type; secret-looking ones
    are never printed), over the `kafka:` section's when bootstrap_servers is not set."""
    flush_timeout: PositiveFloat = 30.0
    """Seconds the broker has to acknowledge a delivery before the attempt fails."""
    template: Annotated[JsonValue, AfterValidator(_check_template)] = None
    """The record value to write instead of the action: JSON whose strings may hold
    {{ PATH }} placeholders, as a webhook's template."""


class PythonSpec(_Spec):
    """``module:function`` called with each action."""

    type: Literal["python"]
    """python: call a function of your own with each action."""
    function: Annotated[str, StringConstraints(pattern=r"^[\w.]+:[\w.]+$")]
    """The function as module:function (importable by the connector)."""


# -- workflow engines ----------------------------------------------------------------------

Concurrency = Annotated[int, Field(ge=1, le=256)]
_NOTIFY = "the event itself has no engine call: use a webhook, kafka or python target"


class TemporalSpec(_Spec):
    """Temporal (``connector.targets.temporal``); needs the ``temporal`` extra."""

    type: Literal["temporal"]
    """temporal: start and stop Temporal workflows, task actions as Workflow Updates."""
    address: NonEmpty = "127.0.0.1:7233"
    """The Temporal frontend, HOST:PORT."""
    namespace: NonEmpty = "default"
    """The Temporal namespace the workflows run in."""
    task_queue: NonEmpty
    """The task queue started workflows go to."""
    # rule workflow -> Temporal workflow type (default: the same name)
    workflows: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)
    """A rule's workflow name -> the Temporal workflow type (default: the same name)."""
    api_key: SecretStr | None = None
    """An API key for Temporal Cloud (a secret: never printed)."""
    tls: bool = False
    """Connect with TLS."""
    id_prefix: str = "kec-"
    """Prefix of the workflow ids the target starts (then the workflow and the action id)."""
    template: Annotated[JsonValue, AfterValidator(_check_template)] = None
    """The argument a started workflow gets instead of the default document: JSON whose
    strings may hold {{ PATH }} placeholders (value.order_id, event_key, action_id...)."""
    update: NonEmpty = "task_action"
    """The Workflow Update that task actions (START, STOP, RESTART) are sent as."""
    stop: Literal["cancel", "terminate"] = "cancel"
    """How a stop action ends a workflow: cancel (it may clean up) or terminate."""
    rpc_timeout: PositiveFloat = 10.0
    """Seconds each call to Temporal may take before it is retried."""
    concurrency: Concurrency = 8
    """How many calls may be in flight at once (for actions of different keys)."""

    refuses: ClassVar[dict[ActionKind, str]] = {ActionKind.NOTIFY: _NOTIFY}


class AirflowSpec(_Spec):
    """Airflow 3's REST API (``connector.targets.airflow``)."""

    type: Literal["airflow"]
    """airflow: DAG runs and task instances through Airflow 3's REST API."""
    url: NonEmpty
    """The Airflow API server, e.g. http://airflow:8080."""
    username: NonEmpty | None = None
    """User for POST /auth/token (with password); or give a token."""
    password: SecretStr | None = Field(default=None, validate_default=True)
    """That user's password (a secret: never printed)."""
    token: SecretStr | None = None
    """A bearer token to use as it is (a secret: never printed)."""
    # rule workflow -> dag_id (default: the same name)
    dags: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)
    """A rule's workflow name -> the dag_id (default: the same name)."""
    # Run ids are ^[A-Za-z0-9_.~:+-]+$, at most 250 characters: the action id adds 32.
    run_id_prefix: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9_.~:+-]*$", max_length=200)
    ] = "kec__"
    """Prefix of the dag_run_ids the target creates (then the action id)."""
    template: Annotated[JsonValue, AfterValidator(_check_object_template)] = None
    """The DAG run's conf instead of the default document: a JSON object whose strings
    may hold {{ PATH }} placeholders (value.order_id, event_key, action_id...)."""
    start_option: NonEmpty | None = None
    """The option a START answers the task's human-in-the-loop gate with (default: the
    gate's first)."""
    # START answers a gate that has waited this long (works around an Airflow 3.3 race).
    gate_settle_seconds: Annotated[float, Field(ge=0)] = 5.0
    """START answers a gate only once it has waited this long (an Airflow 3.3 race)."""
    timeout: PositiveFloat = 10.0
    """Seconds each request may take before it is retried."""
    verify: bool = True
    """Check the server's TLS certificate."""
    concurrency: Concurrency = 8
    """How many requests may be in flight at once (actions of different keys), on one
    event loop: for a receiver answering in T seconds, at most concurrency / T a second."""

    refuses: ClassVar[dict[ActionKind, str]] = {ActionKind.NOTIFY: _NOTIFY}

    # Field validators rather than a model one, so each error has its field's line.
    @field_validator("password")
    @classmethod
    def _with_username(cls, password: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (password is None) != (info.data.get("username") is None):
            raise ValueError("give username and password together")
        return password

    @field_validator("token")
    @classmethod
    def _token_alone(cls, token: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if token is not None and info.data.get("username") is not None:
            raise ValueError("give a token or a username and password, not both")
        return token


_NO_TASKS = "Prefect has no API to act on one task of a flow run"


class PrefectSpec(_Spec):
    """Prefect 3's REST API (``connector.targets.prefect``): start and stop flow runs."""

    type: Literal["prefect"]
    """prefect: start and stop flow runs through Prefect 3's REST API."""
    url: NonEmpty
    """The Prefect API, e.g. http://prefect:4200/api."""
    api_key: SecretStr | None = None
    """An API key (a secret: never printed)."""
    # rule workflow -> "flow/deployment" or a deployment id (default: the same)
    deployments: dict[NonEmpty, NonEmpty] = Field(default_factory=dict)
    """A rule's workflow name -> "flow/deployment" or a deployment id (default: the same)."""
    event_parameter: NonEmpty = "trigger"
    """The flow parameter that receives the triggering event."""
    template: Annotated[JsonValue, AfterValidator(_check_object_template)] = None
    """The flow run's parameters instead of {event_parameter: the default document}: a
    JSON object whose strings may hold {{ PATH }} placeholders (value.order_id...)."""
    key_prefix: str = "kec:"
    """Prefix of the idempotency keys (then the deployment and the action id)."""
    timeout: PositiveFloat = 10.0
    """Seconds each request may take before it is retried."""
    verify: bool = True
    """Check the server's TLS certificate."""
    concurrency: Concurrency = 8
    """How many requests may be in flight at once (actions of different keys), on one
    event loop: for a receiver answering in T seconds, at most concurrency / T a second."""

    refuses: ClassVar[dict[ActionKind, str]] = {
        ActionKind.START_TASK: _NO_TASKS,
        ActionKind.STOP_TASK: _NO_TASKS,
        ActionKind.RESTART_TASK: _NO_TASKS
        + " (a restart of the whole run could not be told apart from a resend)",
        ActionKind.NOTIFY: _NOTIFY,
    }


AnyTargetSpec = (
    LogSpec
    | CommandSpec
    | WebhookSpec
    | KafkaSpec
    | PythonSpec
    | TemporalSpec
    | AirflowSpec
    | PrefectSpec
)
"""The settings of any target, already validated."""
TargetSpec = Annotated[AnyTargetSpec, Field(discriminator="type")]
"""The settings of one target, chosen by its ``type`` (a config file's ``targets:``)."""

_SPECS: dict[str, type[_Spec]] = {
    "log": LogSpec,
    "command": CommandSpec,
    "webhook": WebhookSpec,
    "kafka": KafkaSpec,
    "python": PythonSpec,
    "temporal": TemporalSpec,
    "airflow": AirflowSpec,
    "prefect": PrefectSpec,
}


def refusal(target_type: str, action: str) -> str | None:
    """Why a target of ``target_type`` can never carry out ``action`` (``None``: it can)."""
    spec = _SPECS.get(target_type)
    try:
        kind = ActionKind(action)
    except ValueError:
        return None  # an unknown action is reported by the rule's own validation
    return spec.refuses.get(kind) if spec is not None else None


def parse_target(name: str, spec: Mapping[str, Any]) -> AnyTargetSpec:
    """The settings of target ``name`` from a mapping keyed by its ``type``.

    Errors become one :class:`~kec.errors.ConfigError` that names the target and each
    field path.
    """
    kind = spec.get("type")
    model = _SPECS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConfigError(
            f"target {name!r}: unknown type {kind!r}; expected one of {', '.join(_SPECS)}"
        )
    try:
        return cast(AnyTargetSpec, model.model_validate(dict(spec)))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"target {name!r}: {problems}") from exc
