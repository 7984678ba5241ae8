"""Correlation rules' models: a business key taken from the event, and sequences.

A leaf, like :mod:`connector.rules.models` (the config imports it; the evaluator is
:mod:`connector.rules.join`). In YAML::

    - name: ship-paid-orders
      namespace: orders
      all_of: {keys: [payment, shipment], window: 600, policy: latest}
      correlate: {json: order.id, ttl: 3600}   # or {header: order-id}, or {context: true}
      action: start
      workflow: ship

    - name: checkout-funnel
      namespace: shop
      sequence: {keys: [cart, checkout, paid], window: 900}
      correlate: {json: session}
      action: notify

``correlate`` names where each event's *correlation value* is: a dotted JSON path into
the value (``json``), a Kafka header (``header``) or the event's context (``context:
true``). The rule then keeps one set per correlation value (per value and context for
task rules), so the payment and the shipment of order 42 complete one set whichever
topics and partitions they came from, and never meet those of order 43. A value is
compared as text: a JSON string as itself, a number in its shortest form (``42`` and
``42.0`` are one value), ``true``/``false``; an event whose correlation value is missing,
``null``, an object or a list does not count for the rule.

``ttl`` (seconds of event time) bounds how long an incomplete set lives from its first
event, however its members slide within ``window``; a correlated rule needs ``window`` or
``ttl`` (or both), since each correlation value holds a set of its own until it
completes.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator, model_validator

from connector.common.model_base import ConfigModel, NonEmpty

__all__ = ["Correlate", "KeySequence"]


def _check_path(path: str) -> str:
    if any(not segment for segment in path.split(".")):
        raise ValueError(f"invalid JSON path {path!r}: empty segment")
    return path


class Correlate(ConfigModel):
    """Where an event's correlation value is: give exactly one of ``json``, ``header``,
    ``context``."""

    json_: Annotated[NonEmpty, AfterValidator(_check_path)] | None = Field(
        default=None, validation_alias="json", serialization_alias="json"
    )
    """A dotted path into the value parsed as JSON (order.id); a segment of digits
    indexes a list."""
    header: NonEmpty | None = None
    """A Kafka header of the record (its first occurrence, as UTF-8)."""
    context: bool | None = None
    """true: the event's context (the workflow execution that sent it)."""
    ttl: float | None = Field(default=None, gt=0)
    """Seconds of event time an incomplete set lives after its first event."""

    @model_validator(mode="after")
    def _one_source(self) -> Correlate:
        given = [
            name
            for name, value in (("json", self.json_), ("header", self.header))
            if value is not None
        ]
        if self.context is not None:
            if not self.context:
                raise ValueError("`context: false` is no source: give json, header or context")
            given.append("context")
        if len(given) != 1:
            raise ValueError(
                "correlate needs exactly one of json, header, context"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def source(self) -> str:
        """``json:PATH``, ``header:NAME`` or ``context``: for messages and labels."""
        if self.json_ is not None:
            return f"json:{self.json_}"
        if self.header is not None:
            return f"header:{self.header}"
        return "context"


class KeySequence(ConfigModel):
    """Keys that must arrive in this order of event time (create times), the last at most
    ``window`` seconds after the first: A, then B not before it, then C not before that B.
    """

    keys: tuple[NonEmpty, ...] = Field(min_length=2)
    """The event keys (exact or glob), in the order they must happen."""
    window: float = Field(gt=0)
    """Seconds of event time from the first event of the sequence to its last."""

    @field_validator("keys")
    @classmethod
    def _unique_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted(k for k, n in Counter(keys).items() if n > 1)
        if repeated:
            raise ValueError(f"keys repeated: {', '.join(repeated)}")
        return keys
