"""Why a rule would or would not fire for an event (``event-connector explain``). Pure.

Each rule is judged on its own, step by step, in the order the engine itself applies
them, and the first step that fails is the reason: the namespace, the key (exact or glob,
or one of an ``all_of`` set), a task rule's need for a context, the ``context`` pattern,
then each value condition. A rule that passes every step fires, or, for ``all_of``, takes
the event into its set and waits for the other keys (explain keeps no state: it says what
the set still needs). The verdicts come from the engine (:class:`TriggerEngine` on the
rule alone, with each condition alone), so explain cannot disagree with ``run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from connector.rules.limits import MatchLimits
from connector.rules.models import JsonPredicate, Rule, ValueMatch, is_glob
from connector.rules.trigger import TriggerEngine
from kec.event import Event

__all__ = ["FIRES", "NO", "WAITS", "Verdict", "explain"]

FIRES = "fires"
WAITS = "waits"  # an all_of rule took the event into its set
NO = "no"


@dataclass(frozen=True)
class Verdict:
    """One rule's answer for the event."""

    rule: str
    verdict: str  # FIRES, WAITS or NO
    reason: str
    action: str  # what it does when it fires: kind, workflow/task, target

    def to_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "verdict": self.verdict,
            "reason": self.reason,
            "action": self.action,
        }


def explain(
    rules: Sequence[Rule], event: Event, limits: MatchLimits | None = None
) -> list[Verdict]:
    """Each rule's verdict for ``event``, in declaration order."""
    limits = limits or MatchLimits()
    return [_judge(rule, event, limits) for rule in rules]


def _matches(key: str, pattern: str) -> bool:
    return fnmatchcase(key, pattern) if is_glob(pattern) else key == pattern


def _action(rule: Rule) -> str:
    what = str(rule.action.value)
    if rule.task:
        what += f" task {rule.workflow}/{rule.task}"
    elif rule.workflow:
        what += f" workflow {rule.workflow}"
    return f"{what} -> {rule.target}"


def _fires(rule: Rule, event: Event, limits: MatchLimits) -> tuple[bool, bool]:
    """(an action came out, the rule's state changed) for ``rule`` alone, no prior state."""
    result = TriggerEngine([rule], limits=limits).evaluate(event, {})
    return bool(result.actions), bool(result.state_updates)


def _judge(rule: Rule, event: Event, limits: MatchLimits) -> Verdict:
    def no(reason: str) -> Verdict:
        return Verdict(rule.name, NO, reason, _action(rule))

    if rule.namespace != event.namespace:
        return no(f"namespace {rule.namespace!r}; the event's is {event.namespace!r}")
    matched = [p for p in rule.patterns if _matches(event.key, p)]
    if not matched:
        shown = ", ".join(repr(p) for p in rule.patterns)
        which = "any of the keys" if len(rule.patterns) > 1 else "the key"
        return no(f"key {event.key!r} does not match {which} {shown}")
    if rule.is_task_rule and event.context is None:
        return no("a task rule acts in the event's workflow execution: the event has no context")
    correlation: str | None = None
    if rule.correlate is not None:
        correlation = _correlation(rule, event)
        if correlation is None:
            return no(
                f"the event carries no correlation value ({rule.correlate.source}): it does "
                "not count for this rule"
            )
    timing = rule.timing
    if timing is not None and getattr(timing, "by", None) not in (None, "key"):
        from connector.rules.windows import Timed

        if Timed(rule, rule.is_task_rule).group(event) is None:
            return no(f"the event has no {timing.by} (the rule's group): it does not count")
    bare = rule.model_copy(update={"value": None})
    fired, waiting = _fires(bare, event, limits)
    if not fired and not waiting:
        return no(f"context {event.context!r} does not match {rule.context!r}")
    if rule.value is not None:
        failed = _failed_condition(rule, event, limits)
        if failed is not None:
            return no(failed)
    if rule.timing is not None and not fired:
        return Verdict(rule.name, WAITS, _timed_reason(rule), _action(rule))
    if rule.sequence is not None and not fired:
        keys = list(rule.sequence.keys)
        at = keys.index(matched[0]) if matched[0] in keys else 0
        before, after = keys[:at], keys[at + 1 :]
        scope = f" for {rule.correlate.source} {correlation!r}" if rule.correlate else ""
        needs = [f"{', then '.join(map(repr, before))} came before it"] if before else []
        needs += [f"{', then '.join(map(repr, after))} follow(s)"] if after else []
        return Verdict(
            rule.name,
            WAITS,
            f"takes {event.key!r} as step {at + 1} of its sequence{scope}; fires once "
            f"{' and '.join(needs)} in event time, within {rule.sequence.window:g}s",
            _action(rule),
        )
    if rule.all_of is not None and not fired:
        others = [k for k in rule.all_of.keys if k not in matched]
        window = f" within {rule.all_of.window:g}s" if rule.all_of.window else ""
        scope = f" of context {event.context!r}" if rule.is_task_rule else ""
        if rule.correlate is not None:
            scope += f" for {rule.correlate.source} {correlation!r}"
        return Verdict(
            rule.name,
            WAITS,
            f"takes {event.key!r} into its set; fires once {', '.join(map(repr, others))}"
            f"{scope} arrived too{window}",
            _action(rule),
        )
    return Verdict(rule.name, FIRES, "every condition holds", _action(rule))


def _timed_reason(rule: Rule) -> str:
    """What a time-driven rule does with a matching event instead of firing at once."""
    if rule.debounce is not None:
        d = rule.debounce
        return (f"joins the burst of its {d.by}; fires once no event of it comes for "
                f"{d.quiet:g}s of event time, carrying the burst's {d.carry} event")  # fmt: skip
    if rule.batch is not None:
        b = rule.batch
        group = f"its {b.by}'s batch" if b.by else "the partition's batch"
        return (f"joins {group}; fires at {b.size} events or {b.within:g}s of event time "
                "after the first, whichever comes first")  # fmt: skip
    if rule.absence is not None:
        a = rule.absence
        return (f"starts a timeout of its {a.by}: fires unless an event of {a.then!r} is "
                f"created within {a.within:g}s of event time")  # fmt: skip
    assert rule.throttle is not None
    return (f"throttled: another action of its {rule.throttle.by} fired less than "
            f"{rule.throttle.period:g}s ago; counted in the next one")  # fmt: skip


def _correlation(rule: Rule, event: Event) -> str | None:
    """The event's correlation value for ``rule`` (None: it carries none)."""
    from connector.rules.join import Join
    from kec.evaluation import event_value

    return Join(rule).value(event.context, event.headers, lambda: event_value(event))


def _failed_condition(rule: Rule, event: Event, limits: MatchLimits) -> str | None:
    """The first value condition of ``rule`` that ``event`` fails, in words."""
    value = rule.value
    assert value is not None
    if len(event.value) > limits.max_value_length:
        return (
            f"the value is {len(event.value)} long, over the limit of "
            f"{limits.max_value_length} (pipeline.match_max_value_length): every value "
            "condition fails"
        )
    parts: list[tuple[str, ValueMatch]] = []
    if value.equals is not None:
        parts.append((f"value equals {value.equals!r}", ValueMatch(equals=value.equals)))
    if value.regex is not None:
        parts.append((f"value regex {value.regex!r}", ValueMatch(regex=value.regex)))
    for pred in value.json_:
        parts.append((_predicate(pred), ValueMatch.model_validate({"json": [pred]})))
    for words, alone in parts:
        fired, waiting = _fires(rule.model_copy(update={"value": alone}), event, limits)
        if not fired and not waiting:
            return f"condition not met: {words}"
    return None


def _predicate(pred: JsonPredicate) -> str:
    shown = pred.model_dump(by_alias=True, exclude_defaults=True, exclude={"path"})
    tests = ", ".join(f"{k} {v!r}" for k, v in shown.items())
    return f"json {pred.path}: {tests}"
