"""Targets: where actions are delivered (docs/architecture.md, "Targets").

:func:`build_target` makes a target from its config mapping, chosen by ``type``::

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

Values of ``headers``, ``env`` and ``properties`` whose names say they are secrets
(password, secret, token, key, auth…: :mod:`connector.redaction`) are kept as
:class:`~pydantic.SecretStr` and never printed; ``build()`` reveals them to the target.

The specs are pydantic models (extra fields refused), so a config module can embed
:data:`TargetSpec` in its schema; :func:`build_target` turns their errors into one
:class:`~kec.errors.ConfigError` that names the target and each field path.
Building does no I/O: call ``open()`` on the result.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from connector.redaction import HiddenProperties, HiddenStrings, redact_url, reveal
from connector.targets.base import Target
from connector.targets.command import CommandTarget
from connector.targets.kafka import KafkaTarget
from connector.targets.log import LogTarget
from connector.targets.python import PythonTarget
from connector.targets.webhook import WebhookTarget
from kec.action import ActionKind
from kec.errors import ConfigError

__all__ = [
    "BASE_DIR",
    "DATA_DIR",
    "AirflowSpec",
    "CommandSpec",
    "CommandTarget",
    "KafkaSpec",
    "KafkaTarget",
    "LogSpec",
    "LogTarget",
    "PrefectSpec",
    "PythonSpec",
    "PythonTarget",
    "RelativePath",
    "StatePath",
    "Target",
    "TargetSpec",
    "TemporalSpec",
    "WebhookSpec",
    "WebhookTarget",
    "build_target",
    "refusal",
]

NonEmpty = Annotated[str, StringConstraints(min_length=1)]
ExitCode = Annotated[int, Field(ge=1, le=255)]

BASE_DIR = "base_dir"
"""Validation context key: the directory relative paths are resolved against (the config
file's, set by :func:`connector.config.load_config`); without it, the working directory."""
DATA_DIR = "data_dir"
"""Validation context key: the directory relative paths of files the connector writes are
resolved against (``--data-dir`` / ``KEC_DATA_DIR``, set by
:func:`connector.config.load_config`); without it, :data:`BASE_DIR`'s."""


def _from_base(path: Path, info: ValidationInfo) -> Path:
    base = info.context.get(BASE_DIR) if isinstance(info.context, dict) else None
    return Path(base) / path if base is not None and not path.is_absolute() else path


def _from_data_dir(path: Path, info: ValidationInfo) -> Path:
    data = info.context.get(DATA_DIR) if isinstance(info.context, dict) else None
    return Path(data) / path if data is not None and not path.is_absolute() else path


RelativePath = Annotated[Path, AfterValidator(_from_base)]
"""A path the connector reads (TLS files, a command's folder): when relative, relative to
the config file it was read from."""
StatePath = Annotated[Path, AfterValidator(_from_data_dir), AfterValidator(_from_base)]
"""A path the connector writes (the sqlite store, a log target's file): when relative,
relative to the data directory (``--data-dir`` / ``KEC_DATA_DIR``), by default the
config file's folder. Its location is checked at start-up
(:func:`connector.config.paths.check_writable`)."""


class _Spec(BaseModel):
    # Attribute docstrings become the fields' descriptions in `event-connector schema`.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    # Action kinds the target cannot carry out at all, with why: refused at config time.
    refuses: ClassVar[dict[ActionKind, str]] = {}

    def build(self, name: str) -> Target:
        raise NotImplementedError

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

    def build(self, name: str) -> Target:
        return LogTarget(name, self.path, fsync=self.fsync)


class CommandSpec(_Spec):
    """A process per action; ``argv`` is a list, or one string with ``shell: true``.

    Its environment: ``PATH``, ``HOME``, ``LANG``, ``LC_*`` and ``TZ`` of the connector's,
    the names (or globs) in ``inherit_env``, then ``env``, then the action's ``KEC_*``.
    ``stdin: true`` writes the action's JSON to stdin (instead of ``KEC_ACTION_JSON``).
    """

    type: Literal["command"]
    """command: run a process per action, the action in its environment (KEC_*)."""
    argv: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)]
    """The program and its arguments as a list; one string with shell: true."""
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

    def build(self, name: str) -> Target:
        target = CommandTarget(
            name,
            self.argv,
            timeout=self.timeout,
            stdin=self.stdin,
            reject_exit_codes=self.reject_exit_codes,
            env=reveal(self.env),
            inherit_env=self.inherit_env,
            cwd=self.cwd,
            shell=self.shell,
        )
        target.concurrency = self.concurrency
        return target


class WebhookSpec(_Spec):
    """HTTP POST to ``url`` with ``headers``; ``timeout`` bounds each request phase;
    ``concurrency`` requests at once (actions of different keys)."""

    type: Literal["webhook"]
    """webhook: an HTTP POST per action, with an Idempotency-Key header."""
    url: NonEmpty
    """Where to POST the action as JSON."""
    headers: HiddenStrings = Field(default_factory=dict)
    """Extra request headers (e.g. Authorization; secret-looking ones are never printed)."""
    timeout: PositiveFloat = 10.0
    """Seconds each phase of a request (connect, send, read) may take."""
    verify: bool = True
    """Check the server's TLS certificate."""
    concurrency: PositiveInt = 16
    """How many requests may be in flight at once (for actions of different keys)."""

    def build(self, name: str) -> Target:
        return WebhookTarget(
            name,
            self.url,
            headers=reveal(self.headers),
            timeout=self.timeout,
            verify=self.verify,
            concurrency=self.concurrency,
        )


class KafkaSpec(_Spec):
    """Records to ``topic``; ``properties`` are extra librdkafka producer settings."""

    type: Literal["kafka"]
    """kafka: a record per action (idempotent producer, action-id header)."""
    topic: NonEmpty
    """The topic the actions are written to."""
    bootstrap_servers: NonEmpty
    """The cluster of that topic, HOST:PORT[,HOST:PORT...]."""
    properties: HiddenProperties = Field(default_factory=dict)
    """Extra librdkafka producer properties (e.g. compression.type; secret-looking ones
    are never printed)."""
    flush_timeout: PositiveFloat = 30.0
    """Seconds the broker has to acknowledge a delivery before the attempt fails."""

    def build(self, name: str) -> Target:
        return KafkaTarget(
            name,
            self.topic,
            self.bootstrap_servers,
            properties=reveal(self.properties),
            flush_timeout=self.flush_timeout,
        )


class PythonSpec(_Spec):
    """``module:function`` called with each action."""

    type: Literal["python"]
    """python: call a function of your own with each action."""
    function: Annotated[str, StringConstraints(pattern=r"^[\w.]+:[\w.]+$")]
    """The function as module:function (importable by the connector)."""

    def build(self, name: str) -> Target:
        return PythonTarget(name, self.function)


# -- workflow engines ----------------------------------------------------------------------

Concurrency = Annotated[int, Field(ge=1, le=256)]
_NOTIFY = "the event itself has no engine call: use a webhook, kafka or python target"


def _secret(value: SecretStr | None) -> str | None:
    # Empty means none, so `${TOKEN:-}` in a file can leave a credential out.
    return (value.get_secret_value() or None) if value is not None else None


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
    update: NonEmpty = "task_action"
    """The Workflow Update that task actions (START, STOP, RESTART) are sent as."""
    stop: Literal["cancel", "terminate"] = "cancel"
    """How a stop action ends a workflow: cancel (it may clean up) or terminate."""
    rpc_timeout: PositiveFloat = 10.0
    """Seconds each call to Temporal may take before it is retried."""
    concurrency: Concurrency = 8
    """How many calls may be in flight at once (for actions of different keys)."""

    refuses: ClassVar[dict[ActionKind, str]] = {ActionKind.NOTIFY: _NOTIFY}

    def build(self, name: str) -> Target:
        try:
            from connector.targets.temporal import TemporalTarget
        except ImportError as exc:
            raise ConfigError(
                f"target {name!r}: the temporal target needs the Temporal SDK:"
                f" pip install 'kafka-event-connector[temporal]' ({exc})"
            ) from exc
        return TemporalTarget(
            name,
            self.address,
            namespace=self.namespace,
            task_queue=self.task_queue,
            workflows=self.workflows,
            api_key=_secret(self.api_key),
            tls=self.tls,
            id_prefix=self.id_prefix,
            update=self.update,
            stop=self.stop,
            rpc_timeout=self.rpc_timeout,
            concurrency=self.concurrency,
        )


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
    """How many requests may be in flight at once (for actions of different keys)."""

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

    def build(self, name: str) -> Target:
        from connector.targets.airflow import AirflowTarget

        return AirflowTarget(
            name,
            self.url,
            username=self.username,
            password=_secret(self.password),
            token=_secret(self.token),
            dags=self.dags,
            run_id_prefix=self.run_id_prefix,
            start_option=self.start_option,
            gate_settle=self.gate_settle_seconds,
            timeout=self.timeout,
            verify=self.verify,
            concurrency=self.concurrency,
        )


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
    key_prefix: str = "kec:"
    """Prefix of the idempotency keys (then the deployment and the action id)."""
    timeout: PositiveFloat = 10.0
    """Seconds each request may take before it is retried."""
    verify: bool = True
    """Check the server's TLS certificate."""
    concurrency: Concurrency = 8
    """How many requests may be in flight at once (for actions of different keys)."""

    refuses: ClassVar[dict[ActionKind, str]] = {
        ActionKind.START_TASK: _NO_TASKS,
        ActionKind.STOP_TASK: _NO_TASKS,
        ActionKind.RESTART_TASK: _NO_TASKS
        + " (a restart of the whole run could not be told apart from a resend)",
        ActionKind.NOTIFY: _NOTIFY,
    }

    def build(self, name: str) -> Target:
        from connector.targets.prefect import PrefectTarget

        return PrefectTarget(
            name,
            self.url,
            api_key=_secret(self.api_key),
            deployments=self.deployments,
            event_parameter=self.event_parameter,
            key_prefix=self.key_prefix,
            timeout=self.timeout,
            verify=self.verify,
            concurrency=self.concurrency,
        )


TargetSpec = Annotated[
    LogSpec
    | CommandSpec
    | WebhookSpec
    | KafkaSpec
    | PythonSpec
    | TemporalSpec
    | AirflowSpec
    | PrefectSpec,
    Field(discriminator="type"),
]

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


def build_target(name: str, spec: Mapping[str, Any]) -> Target:
    """The target named ``name`` described by ``spec`` (keyed by its ``type``), unopened."""
    kind = spec.get("type")
    model = _SPECS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ConfigError(
            f"target {name!r}: unknown type {kind!r}; expected one of {', '.join(_SPECS)}"
        )
    try:
        parsed = model.model_validate(dict(spec))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(spec)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"target {name!r}: {problems}") from exc
    return parsed.build(name)
