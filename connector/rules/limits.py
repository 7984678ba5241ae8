"""How much of an event's value rule conditions look at (docs/architecture.md, "Bad input").

A leaf (standard library and :mod:`kec.errors` only): the trigger engine
(:class:`connector.rules.trigger.TriggerEngine`) applies these bounds, and the configuration
(``pipeline.match_max_value_length``, ``pipeline.match_max_json_depth``) states them
without loading the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kec.errors import ConfigError

__all__ = ["DEFAULT_MAX_JSON_DEPTH", "DEFAULT_MAX_VALUE_LENGTH", "MAX_JSON_DEPTH", "MatchLimits"]

DEFAULT_MAX_VALUE_LENGTH: Final = 1 << 20
DEFAULT_MAX_JSON_DEPTH: Final = 128
# Python's json parser recurses once per level; past about this depth it would meet the
# interpreter's recursion limit, which must never decide what a value is.
MAX_JSON_DEPTH: Final = 500


@dataclass(frozen=True, slots=True)
class MatchLimits:
    """Bounds on what value conditions look at, so no value can stall evaluation.

    ``max_value_length``: a longer value (characters of a text value, bytes of a binary
    one) fails every value condition (``equals``, ``regex``, ``json``); rules without
    value conditions still see it. ``max_json_depth``: JSON nested deeper (``[]`` is
    depth 1) is not JSON to the ``json`` predicates. Each costs a few comparisons per
    event; the depth is only counted for values with more brackets than the limit.
    """

    max_value_length: int = DEFAULT_MAX_VALUE_LENGTH
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH

    def __post_init__(self) -> None:
        if self.max_value_length < 1:
            raise ConfigError(f"max_value_length must be positive, not {self.max_value_length}")
        if not 1 <= self.max_json_depth <= MAX_JSON_DEPTH:
            raise ConfigError(
                f"max_json_depth must be within 1..{MAX_JSON_DEPTH}, not {self.max_json_depth}"
            )
