"""Trigger rules: events → actions, a pure function (docs/architecture.md, "Rules").

* :mod:`~connector.rules.models`: the rules as the config file states them (:class:`Rule`,
  :class:`AllOf`, :class:`KeySequence`, :class:`Correlate`, :class:`ValueMatch`,
  :class:`JsonPredicate`), re-exported here;
* :mod:`~connector.rules.join`: sets per correlation value and sequences, evaluated by
  the engine;
* :mod:`~connector.rules.timing`: the time-driven features (:class:`Debounce`,
  :class:`Throttle`, :class:`Batch`, :class:`Absence`), evaluated by
  :mod:`~connector.rules.windows`;
* :mod:`~connector.rules.trigger`: :class:`~connector.rules.trigger.TriggerEngine`, the
  pure evaluation ``(rules, state, event) -> (actions, state updates)``;
* :mod:`~connector.rules.limits`: how much of a value conditions look at
  (:class:`~connector.rules.limits.MatchLimits`);
* :mod:`~connector.rules.linear_regex`: the RE2 patterns of ``regex`` conditions.

The configuration imports the models and the limits (leaves), never the engine: this
package therefore exports the models only, and the engine is imported from
:mod:`connector.rules.trigger` (tests/unit/test_config_leaves.py).
"""

from __future__ import annotations

from connector.rules.models import (
    TASK_ACTIONS,
    WORKFLOW_ACTIONS,
    AllOf,
    Correlate,
    JsonPredicate,
    KeySequence,
    Rule,
    RuleList,
    ValueMatch,
    check_unique_names,
    is_glob,
)
from connector.rules.timing import Absence, Batch, Debounce, Throttle

__all__ = [
    "TASK_ACTIONS",
    "WORKFLOW_ACTIONS",
    "Absence",
    "AllOf",
    "Batch",
    "Correlate",
    "Debounce",
    "JsonPredicate",
    "KeySequence",
    "Rule",
    "RuleList",
    "Throttle",
    "ValueMatch",
    "check_unique_names",
    "is_glob",
]
