"""Rule models: what a valid rule looks like and how an invalid one is reported (by field)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from connector.rules import AllOf, JsonPredicate, Rule, RuleList, ValueMatch, is_glob
from kec.action import ActionKind

BASE: dict[str, Any] = {"name": "r", "key": "k", "action": "start", "workflow": "wf"}


class Config(BaseModel):
    """How the config module embeds a rule list."""

    rules: RuleList


def errors_of(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as info:
        Rule.model_validate(data)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_full_rule_from_yaml_shape() -> None:
    rule = Rule.model_validate(
        {
            "name": "orders-done",
            "namespace": "shop",
            "key": "order-*",
            "value": {
                "equals": "x",
                "regex": "^ok",
                "json": [{"path": "status", "in": ["ok", "done"]}, {"path": "a.b", "gt": 1}],
            },
            "action": "RESTART",
            "workflow": "etl",
            "task": "load",
            "target": "hooks",
        }
    )
    assert rule.action is ActionKind.RESTART_TASK
    assert rule.is_task_rule
    assert rule.patterns == ("order-*",)
    assert rule.value == ValueMatch(
        equals="x",
        regex="^ok",
        json_=(JsonPredicate(path="status", in_=("ok", "done")), JsonPredicate(path="a.b", gt=1)),
    )


def test_defaults() -> None:
    rule = Rule.model_validate(BASE)
    assert (rule.namespace, rule.target, rule.value, rule.all_of) == ("default", "log", None, None)
    assert not rule.is_task_rule


def test_all_of_rule() -> None:
    rule = Rule.model_validate(
        {**BASE, "key": None, "all_of": {"keys": ["a", "b"], "window": 60, "policy": "first"}}
    )
    assert rule.all_of == AllOf(keys=("a", "b"), window=60.0, policy="first")
    assert rule.patterns == ("a", "b")


def test_notify_rule_needs_no_workflow() -> None:
    rule = Rule.model_validate({"name": "n", "key": "k", "action": "notify"})
    assert rule.workflow is None


def test_rules_are_frozen() -> None:
    rule = Rule.model_validate(BASE)
    with pytest.raises(ValidationError, match="frozen"):
        rule.name = "other"


@pytest.mark.parametrize(
    ("pattern", "glob"),
    [("order-*", True), ("a?", True), ("[ab]", True), ("order-1", False), ("a.b/c", False)],
)
def test_is_glob(pattern: str, glob: bool) -> None:
    assert is_glob(pattern) is glob


@pytest.mark.parametrize(
    ("change", "loc", "message"),
    [
        ({"name": ""}, ("name",), "at least 1 character"),
        ({"namespace": ""}, ("namespace",), "at least 1 character"),
        ({"key": ""}, ("key",), "at least 1 character"),
        ({"key": None}, ("all_of",), "needs `key` or `all_of`"),
        (
            {"all_of": {"keys": ["a", "b"], "policy": "latest"}},
            ("all_of",),
            "either `key` or `all_of`",
        ),
        ({"action": "Start"}, ("action",), "Input should be"),
        ({"workflow": None}, ("workflow",), "needs a workflow"),
        ({"action": "START"}, ("task",), "task action `START` needs a task"),
        ({"task": "t"}, ("task",), "takes no task (use `START` for a task)"),
        ({"action": "notify"}, ("workflow",), "`notify` takes no workflow"),
        ({"value": {"regex": "(unclosed"}}, ("value", "regex"), "invalid regular expression"),
        ({"value": {"json": [{"path": "a"}]}}, ("value", "json", 0), "needs one of"),
        (
            {"value": {"json": [{"path": "a..b", "exists": True}]}},
            ("value", "json", 0, "path"),
            "empty segment",
        ),
        ({"value": {"json": [{"path": "a", "in": []}]}}, ("value", "json", 0, "in"), "at least 1"),
        (
            {"value": {"json": [{"path": "a", "gt": "1"}]}},
            ("value", "json", 0, "gt"),
            "valid number",
        ),
        (
            {"value": {"json": [{"path": "a", "gt": True}]}},
            ("value", "json", 0, "gt"),
            "valid number",
        ),
        ({"value": {"regexp": "x"}}, ("value", "regexp"), "Extra inputs"),
        ({"when": "x"}, ("when",), "Extra inputs"),
    ],
)
def test_invalid_rule_reported_at_its_field(
    change: dict[str, Any], loc: tuple[int | str, ...], message: str
) -> None:
    errors = errors_of({**BASE, **change})
    assert any(e_loc == loc and message in msg for e_loc, msg in errors), errors


@pytest.mark.parametrize(
    ("all_of", "loc", "message"),
    [
        ({"keys": ["a"], "policy": "latest"}, ("all_of", "keys"), "at least 2"),
        ({"keys": ["a", "b", "a"], "policy": "latest"}, ("all_of", "keys"), "keys repeated: a"),
        ({"keys": ["a", ""], "policy": "latest"}, ("all_of", "keys", 1), "at least 1 character"),
        ({"keys": ["a", "b"]}, ("all_of", "policy"), "Field required"),
        ({"keys": ["a", "b"], "policy": "last"}, ("all_of", "policy"), "'latest' or 'first'"),
        (
            {"keys": ["a", "b"], "policy": "first", "window": 0},
            ("all_of", "window"),
            "greater than 0",
        ),
    ],
)
def test_invalid_all_of(all_of: dict[str, Any], loc: tuple[int | str, ...], message: str) -> None:
    errors = errors_of({**BASE, "key": None, "all_of": all_of})
    assert any(e_loc == loc and message in msg for e_loc, msg in errors), errors


def test_equals_null_is_not_the_same_as_no_equals() -> None:
    with_null = JsonPredicate.model_validate({"path": "a", "exists": True, "equals": None})
    without = JsonPredicate.model_validate({"path": "a", "exists": True})
    assert with_null.has_equals
    assert not without.has_equals
    assert with_null != without


def test_rule_list_needs_unique_names() -> None:
    second = {**BASE, "key": "other"}
    with pytest.raises(ValidationError) as info:
        Config.model_validate({"rules": [BASE, {**BASE, "name": "s"}, second]})
    (error,) = info.value.errors()
    assert error["loc"] == ("rules",)
    assert "repeated: r" in error["msg"]


def test_rule_list_accepts_distinct_names() -> None:
    config = Config.model_validate({"rules": [BASE, {**BASE, "name": "s"}]})
    assert [r.name for r in config.rules] == ["r", "s"]


@pytest.mark.parametrize(
    "predicate",
    [{"path": "a", "exists": True}, {"path": "a", "equals": None}, {"path": "a", "in": [1, "x"]}],
)
def test_rule_dump_validates_back_to_an_equal_rule(predicate: dict[str, Any]) -> None:
    rule = Rule.model_validate({**BASE, "value": {"regex": "x", "json": [predicate]}})
    dumped = rule.model_dump(mode="json", by_alias=True)
    assert (
        dumped["value"]["json"][0]
        == {
            "path": "a",
            "in": None,
            "exists": None,
            "gt": None,
            "ge": None,
            "lt": None,
            "le": None,
        }
        | predicate
    )
    assert Rule.model_validate(dumped) == rule
