"""Trigger rules: what a rule matches and which action it takes (docs/architecture.md, "Rules").

Plain pydantic models, so the config module can embed them in its YAML schema and report
each error with its field path. A rule, in YAML::

    - name: start-task2                # unique across the rule set
      namespace: default               # events of other namespaces never reach it
      key: "order-*"                   # exact key, or a glob when it holds * ? or [
      context: "wf-*"                  # optional: only events of these executions
      value:                           # optional; every condition given must hold
        equals: "done"                 # the value as text equals this
        regex: "^ok"                   # found anywhere in the value as text (RE2)
        json:                          # predicates on the value parsed as JSON
          - {path: status, in: [ok, done]}
          - {path: order.total, gt: 10}
      action: START                    # see below
      workflow: workflow               # required, except by notify
      task: task2                      # required by task actions, refused otherwise
      target: log                      # where the action goes (default "log")

Actions: ``start``/``stop`` a workflow (a workflow trigger: sees every event of the
namespace); ``START``/``STOP``/``RESTART`` a task in the event's own workflow execution
(its ``context``; events without one never trigger a task rule); ``notify`` hands the
event itself to the target.

``context`` (exact or glob, like ``key``) keeps only events whose context matches: the
workflow execution that sent them, and for events of the HTTP gateway the
``{workflow_id}`` of ``POST /event/send_event/{workflow_id}`` (their key is the body's
``event_key``). An event without a context never matches a rule with ``context``.

Instead of ``key`` a rule may wait for several keys (``all_of``)::

      all_of: {keys: [extract-done, load-done], window: 600, policy: latest}

Matching is case-sensitive. A glob follows :mod:`fnmatch` (``[*]`` matches a literal
``*``). A JSON path is dotted; a segment of digits indexes a list; keys containing dots
cannot be addressed. A value that is not JSON fails every JSON predicate. JSON equality
keeps ``true`` apart from ``1`` but treats ``1`` and ``1.0`` as equal.

A value can be hostile, so its conditions are bounded (see
:class:`connector.rules.limits.MatchLimits`): a ``regex`` runs in linear time on RE2
(:mod:`connector.rules.linear_regex`: Python's syntax without lookaround, backreferences and the
like, which are refused here; ``$`` matches only at the very end), a value over the length
limit fails every value condition, and JSON nested deeper than the depth limit is not JSON.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from connector.common.model_base import ConfigModel, NonEmpty
from connector.rules.correlation import Correlate, KeySequence
from connector.rules.linear_regex import LinearRegex
from connector.rules.timing import Absence, Batch, Debounce, Throttle
from kec.action import ActionKind
from kec.event import DEFAULT_NAMESPACE

__all__ = [
    "TASK_ACTIONS",
    "WORKFLOW_ACTIONS",
    "AllOf",
    "Correlate",
    "JsonPredicate",
    "KeySequence",
    "Rule",
    "RuleList",
    "ValueMatch",
    "check_unique_names",
    "is_glob",
]

TASK_ACTIONS = frozenset({ActionKind.START_TASK, ActionKind.STOP_TASK, ActionKind.RESTART_TASK})
WORKFLOW_ACTIONS = frozenset({ActionKind.START_WORKFLOW, ActionKind.STOP_WORKFLOW})

_GLOB_CHARS = frozenset("*?[")
_TIMINGS = ("debounce", "throttle", "batch", "absence")


def is_glob(pattern: str) -> bool:
    """Whether a key pattern is a glob (holds ``*``, ``?`` or ``[``) rather than exact."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def _check_regex(pattern: str) -> str:
    LinearRegex(pattern)  # raises ValueError, with the reason, for what it cannot run
    return pattern


def _check_path(path: str) -> str:
    if any(not segment for segment in path.split(".")):
        raise ValueError(f"invalid JSON path {path!r}: empty segment")
    return path


class JsonPredicate(ConfigModel):
    """Conditions on one field of the JSON value; every operator given must hold.

    ``exists`` tests presence only (a JSON ``null`` is present). ``equals`` and ``in``
    compare JSON values; ``gt``/``ge``/``lt``/``le`` hold only for a number (not a bool).
    """

    path: Annotated[NonEmpty, AfterValidator(_check_path)]
    """The field, dotted (order.total); a segment of digits indexes a list."""
    equals: JsonValue = None  # "not given" and null are told apart by `has_equals`
    """The field equals this JSON value (null included)."""
    in_: tuple[JsonValue, ...] | None = Field(
        default=None, validation_alias="in", serialization_alias="in", min_length=1
    )
    """The field equals one of these JSON values."""
    exists: bool | None = None
    """true: the field is present (even as null); false: it is absent."""
    gt: float | None = Field(default=None, strict=True)
    """The field is a number greater than this."""
    ge: float | None = Field(default=None, strict=True)
    """The field is a number greater than or equal to this."""
    lt: float | None = Field(default=None, strict=True)
    """The field is a number less than this."""
    le: float | None = Field(default=None, strict=True)
    """The field is a number less than or equal to this."""

    # Private attributes take part in model equality, so `equals: null` != no `equals`.
    _has_equals: bool = PrivateAttr(default=False)

    def model_post_init(self, context: Any, /) -> None:
        self._has_equals = "equals" in self.model_fields_set

    @property
    def has_equals(self) -> bool:
        """Whether ``equals`` was given (``null`` included)."""
        return self._has_equals

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not self._has_equals:
            data.pop("equals", None)  # so a dump validates back to an equal predicate
        return data

    @model_validator(mode="after")
    def _one_operator(self) -> JsonPredicate:
        given = (self.in_, self.exists, self.gt, self.ge, self.lt, self.le)
        if not self.has_equals and all(op is None for op in given):
            raise ValueError("a JSON predicate needs one of equals, in, exists, gt, ge, lt, le")
        return self


class ValueMatch(ConfigModel):
    """Conditions on the event value; all given must hold (an empty match holds always)."""

    equals: str | None = None
    """The value, as text, equals this."""
    regex: Annotated[str, AfterValidator(_check_regex)] | None = None
    """This regular expression is found in the value as text (re.search)."""
    json_: tuple[JsonPredicate, ...] = Field(
        default=(), validation_alias="json", serialization_alias="json"
    )
    """Conditions on fields of the value parsed as JSON; all must hold."""


class AllOf(ConfigModel):
    """Several keys that must all arrive before the rule fires once.

    ``policy`` says which event of a key is kept when it arrives more than once before the
    set is complete: ``latest`` (greatest ``create_time``) or ``first`` (least). With
    ``window`` (seconds), events older than the newest one by more than that are dropped.
    The window is *event time*: the events' create times (their Kafka timestamps), never
    the clock of the process, so a connector that was down or lags completes what it would
    have completed on time; see docs/architecture.md, "Rules".
    """

    keys: tuple[NonEmpty, ...] = Field(min_length=2)
    """The event keys (exact or glob) that must all arrive."""
    window: float | None = Field(default=None, gt=0)
    """Seconds of event time (create times): an event older than the newest one of the set
    by more is dropped."""
    policy: Literal["latest", "first"]
    """Which event of a key arriving more than once is kept: the latest or the first
    (by create time)."""

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted(k for k, n in Counter(keys).items() if n > 1)
        if repeated:
            raise ValueError(f"keys repeated: {', '.join(repeated)}")
        return keys


class Rule(ConfigModel):
    """One trigger rule: a match on events of one namespace and one action."""

    name: NonEmpty
    """The rule's name, unique across the rules; part of each action's id."""
    namespace: NonEmpty = DEFAULT_NAMESPACE
    """Only events of this namespace reach the rule."""
    key: NonEmpty | None = None
    """The event key to match: exact, or a glob when it holds * ? or [ (give key or
    all_of)."""
    # Before all_of: its validator reads whether a sequence was given.
    sequence: KeySequence | None = None
    """Fire once when these keys have arrived in this order of event time (give key,
    all_of or sequence); see connector/rules/correlation.py."""
    all_of: AllOf | None = Field(default=None, validate_default=True)
    """Fire once when events of all these keys have arrived (give key or all_of)."""
    correlate: Correlate | None = None
    """all_of and sequence only: one set per correlation value taken from each event (a
    JSON path, a header or the context); see connector/rules/correlation.py."""
    value: ValueMatch | None = None
    """Conditions on the event's value; all must hold."""
    context: NonEmpty | None = None
    """Only events whose context (workflow execution id; for gateway events the URL's
    workflow id) matches: exact or glob."""
    action: ActionKind
    """start/stop a workflow; START/STOP/RESTART a task in the event's own workflow
    execution (its context); notify hands the event to the target."""
    # validate_default: these checks depend on `action`, and must run when omitted too.
    workflow: NonEmpty | None = Field(default=None, validate_default=True)
    """The workflow acted on (every action but notify)."""
    task: NonEmpty | None = Field(default=None, validate_default=True)
    """The task acted on (task actions only)."""
    target: NonEmpty = "log"
    """The target (under targets:) that receives the action."""
    # Time-driven features (connector/rules/timing.py): at most one, with `key` only.
    debounce: Debounce | None = None
    """One action per burst of a group, once its events stop for a quiet period."""
    throttle: Throttle | None = None
    """At most one action per period per group; the others counted in the next."""
    batch: Batch | None = None
    """One action per N events or T seconds of a group, carrying the events."""
    absence: Absence | None = None
    """A timeout action when no `then` event of the group follows within a period."""

    @field_validator("all_of")
    @classmethod
    def _key_or_all_of(cls, all_of: AllOf | None, info: ValidationInfo) -> AllOf | None:
        present = {
            "key": info.data.get("key"),
            "all_of": all_of,
            "sequence": info.data.get("sequence"),
        }
        given = [name for name, value in present.items() if value is not None]
        if not given:
            raise ValueError("a rule needs `key` or `all_of` (or `sequence`)")
        if given == ["key", "all_of"]:
            raise ValueError("give either `key` or `all_of`, not both")
        if len(given) > 1:
            raise ValueError(f"give one of `key`, `all_of`, `sequence`, not {' and '.join(given)}")
        return all_of

    @model_validator(mode="after")
    def _correlation(self) -> Rule:
        if self.correlate is None:
            return self
        if self.all_of is None and self.sequence is None:
            raise ValueError("`correlate` needs `all_of` or `sequence`")
        # A sequence always has a window.
        if self.correlate.ttl is None and self.all_of is not None and self.all_of.window is None:
            raise ValueError(
                "a correlated all_of needs `window` or `correlate.ttl`: each correlation "
                "value keeps a set until it completes"
            )
        return self

    @field_validator("workflow")
    @classmethod
    def _workflow_for_action(cls, workflow: str | None, info: ValidationInfo) -> str | None:
        action = info.data.get("action")
        if action is None:  # `action` itself failed; that error is reported already
            return workflow
        if action == ActionKind.NOTIFY:
            if workflow is not None:
                raise ValueError("action `notify` takes no workflow")
        elif workflow is None:
            raise ValueError(f"action `{action.value}` needs a workflow")
        return workflow

    @field_validator("task")
    @classmethod
    def _task_for_action(cls, task: str | None, info: ValidationInfo) -> str | None:
        action = info.data.get("action")
        if action is None:
            return task
        if action in TASK_ACTIONS and task is None:
            raise ValueError(f"task action `{action.value}` needs a task")
        if action not in TASK_ACTIONS and task is not None:
            hint = (
                f" (use `{action.value.upper()}` for a task)" if action in WORKFLOW_ACTIONS else ""
            )
            raise ValueError(f"action `{action.value}` takes no task{hint}")
        return task

    @model_validator(mode="after")
    def _one_timing(self) -> Rule:
        given = [name for name in _TIMINGS if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of {', '.join(_TIMINGS)}; got {', '.join(given)}")
        if given and self.all_of is not None:
            raise ValueError(f"`{given[0]}` takes `key`, not `all_of`")
        return self

    @property
    def timing(self) -> Debounce | Throttle | Batch | Absence | None:
        """The rule's time-driven feature, if it has one."""
        return self.debounce or self.throttle or self.batch or self.absence

    @property
    def is_task_rule(self) -> bool:
        """Task rules act on the event's workflow execution only (AIFlow)."""
        return self.action in TASK_ACTIONS

    @property
    def patterns(self) -> tuple[str, ...]:
        """The key patterns this rule listens to: its ``key``, or its ``all_of`` or
        ``sequence`` keys."""
        if self.all_of is not None:
            return self.all_of.keys
        if self.sequence is not None:
            return self.sequence.keys
        assert self.key is not None  # the validator guarantees one of the two
        if self.absence is not None:  # A's key, then B's
            return (self.key, self.absence.then)
        return (self.key,)


def check_unique_names(rules: Sequence[Rule]) -> Sequence[Rule]:
    """Raise ``ValueError`` naming every rule name used more than once."""
    repeated = sorted(name for name, n in Counter(r.name for r in rules).items() if n > 1)
    if repeated:
        raise ValueError(f"rule names must be unique; repeated: {', '.join(repeated)}")
    return rules


RuleList = Annotated[tuple[Rule, ...], AfterValidator(check_unique_names)]
"""A rule set as a field type (``rules: RuleList``): validated with unique names."""
