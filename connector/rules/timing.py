"""The time-driven rule features as the config file states them: ``debounce``,
``throttle``, ``batch`` and ``absence`` (docs/architecture.md, "Time-driven rules").

A rule with ``key`` (not ``all_of``) may take one of them; its ``key``, ``value`` and
``context`` still say which events count::

    debounce: {quiet: 30, carry: last, by: key}      # one action per burst of a group
    throttle: {period: 60, by: key}                  # at most one action per period
    batch: {size: 100, within: 60, by: null}         # one action per N events or T s
    absence: {then: payment-done, within: 600, by: value.order_id}   # A, B never came

``by`` names the group an event belongs to: ``key`` (the event key), ``context``, or
``value.PATH`` (a dotted JSON path into the value; a segment of digits indexes a list).
An event without that field does not count. ``batch`` without ``by`` has one group.

Time is *event time*: the events' create times (their Kafka record timestamps) and each
partition's progress, never the process's clock (see the architecture page for the idle
rule that moves time on a partition without records).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from connector.common.model_base import ConfigModel, NonEmpty

__all__ = ["MAX_BATCH_SIZE", "Absence", "Batch", "Debounce", "Throttle", "check_by"]

MAX_BATCH_SIZE = 10_000  # events in one batch action: their ids travel in the action


def check_by(by: str) -> str:
    """``key``, ``context`` or ``value.PATH`` (dotted, no empty segment)."""
    if by in ("key", "context"):
        return by
    if by.startswith("value.") and all(by[len("value.") :].split(".")):
        return by
    raise ValueError(f"`by` must be key, context or value.PATH (a dotted JSON path), not {by!r}")


By = Annotated[str, AfterValidator(check_by)]


class Debounce(ConfigModel):
    """One action per burst of a group: fired once the group's events stop for ``quiet``
    seconds of event time, carrying the ``last`` (or ``first``) event and the count."""

    quiet: float = Field(gt=0)
    """Seconds of event time without an event of the group that close its burst."""
    carry: Literal["last", "first"] = "last"
    """Which event the action carries: the burst's last or first (by create time)."""
    by: By = "key"
    """The group: key, context or value.PATH."""


class Throttle(ConfigModel):
    """At most one action per ``period`` seconds of event time per group: the first event
    of a period fires at once, the others are counted in the next action."""

    period: float = Field(gt=0)
    """Seconds of event time after an action during which the group's events are counted."""
    by: By = "key"
    """The group: key, context or value.PATH."""


class Batch(ConfigModel):
    """One action per ``size`` events of a group, or per ``within`` seconds of event time
    after the first one, whichever comes first, carrying the events' ids and values."""

    size: int = Field(ge=1, le=MAX_BATCH_SIZE)
    """The most events in one batch: the batch fires when it holds this many."""
    within: float = Field(gt=0)
    """Seconds of event time after the batch's first event when it fires, however small."""
    by: By | None = None
    """The group (key, context or value.PATH); none: one batch per rule and partition."""
    max_bytes: int = Field(default=262_144, ge=0)
    """Values carried up to this many characters in all; later events carry their id
    only (``values_dropped`` counts them)."""


class Absence(ConfigModel):
    """A timeout: an event of the rule (A) not followed by an event of ``then`` (B) of the
    same group within ``within`` seconds of event time fires the rule's action, carrying A."""

    then: NonEmpty
    """The key (exact or glob) of the event that must follow."""
    within: float = Field(gt=0)
    """Seconds of event time after A's create time by which B must have been created."""
    by: By = "key"
    """The group A and B share: key, context or value.PATH."""
