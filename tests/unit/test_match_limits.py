"""Bounded rule evaluation: no value can make a value condition hang or crash.

A regex runs on RE2 (linear time, backtracking constructs refused when the config loads),
a value over the length limit fails its value conditions, and JSON nested deeper than the
depth limit is not JSON. The time bounds are pytest-timeout marks, not clock assertions:
the backtracking engine these replace would not finish at all.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.common.json_depth import json_too_deep
from connector.config import ConfigFileError, load_config
from connector.rules.limits import DEFAULT_MAX_JSON_DEPTH, MatchLimits
from connector.rules.linear_regex import LinearRegex
from connector.rules.trigger import TriggerEngine
from kec.errors import ConfigError
from tests.unit.trigger_helpers import make_event, make_rule, run

MIB = 1 << 20
EXISTS = {"json": [{"path": "a", "exists": True}]}
ABSENT = {"json": [{"path": "a", "exists": False}]}


def fired(
    rules: list[dict[str, Any]], value: str | bytes, limits: MatchLimits | None = None
) -> list[str]:
    engine = TriggerEngine(
        [make_rule(name=f"r{i}", **fields) for i, fields in enumerate(rules)], limits=limits
    )
    actions, _ = run(engine, [make_event(value=value)])
    return [a.rule for a in actions]


# -- regex: linear time, or refused -------------------------------------------------------

# Each takes exponential (or high polynomial) time in a backtracking engine on this value.
PATHOLOGICAL = [
    r"^(a+)+$",
    r"^(a|a)*$",
    r"(a|aa)+b",
    r"^(\w+\s?)*$",
    r"(.*a){12}$",
    r".*x.*y.*z",
    r"(a*)*b",
]


@pytest.mark.timeout(120)
def test_a_1_mib_value_against_pathological_regexes_finishes() -> None:
    value = "a" * (MIB - 1) + "!"  # the longest value the default limit lets through
    rules = [{"value": {"regex": p}} for p in PATHOLOGICAL]
    rules.append({"value": {"regex": r"a!$"}})  # and the value is really searched
    assert fired(rules, value) == [f"r{len(PATHOLOGICAL)}"]


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        (r"(a)\1", "not supported"),  # backreference
        (r"(?P<x>a)(?P=x)", "not supported"),
        (r"foo(?=bar)", "not supported"),  # lookahead
        (r"(?<!x)y", "not supported"),  # lookbehind
        (r"(?(1)a|b)", "invalid regular expression"),  # `re` itself refuses this one
        (r"(?>a+)b", "not supported"),  # atomic group
        (r"a++b", "not supported"),  # possessive quantifier
        (r"a{1001}", "not supported"),
        (r"([a-z", "unterminated character set"),  # re's message, with the position
    ],
)
def test_backtracking_or_invalid_patterns_are_refused(pattern: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        LinearRegex(pattern)


def test_a_backtracking_pattern_is_refused_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "connector.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            kafka: {bootstrap_servers: localhost:9092}
            namespaces: {default: {}}
            rules:
              - name: lookahead
                key: k
                value:
                  regex: "done(?!-not)"
                action: notify
            """
        )
    )
    with pytest.raises(ConfigFileError) as info:
        load_config(path, env={})
    [line] = info.value.errors
    assert line.startswith(f"{path}:7 rules[0].value.regex: regular expression")
    assert "not supported" in line


# Patterns both engines read alike (not `$` before a newline, nor `\b` after a non-ASCII
# letter: see connector.rules.linear_regex).
SHARED = [r"ok", r"^o", r"[a-c]+\d", r"(?i)OK", r"o.k", r"\w\s\w", r"(ab|ba){2}", r"^\S*$"]


@settings(max_examples=200, deadline=None)
@given(pattern=st.sampled_from(SHARED), text=st.text(alphabet="okabc1 \n\u00e9K", max_size=12))
def test_linear_regex_agrees_with_re_on_the_shared_syntax(pattern: str, text: str) -> None:
    if pattern.endswith("$"):
        text = text.replace("\n", "")  # `$` before a final newline: re only
    assert LinearRegex(pattern).search(text) == (re.search(pattern, text) is not None)


def test_a_lone_surrogate_is_matched_not_raised() -> None:
    assert LinearRegex("x").search("\ud800x")
    assert fired([{"value": {"regex": "^.x$"}}], "\ud800x") == ["r0"]


# -- JSON depth ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_json_nested_100_000_deep_is_not_json(opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    value = opener * 100_000 + "1" * (opener != "[") + closer * 100_000
    # Not JSON fails every JSON predicate, `exists: false` too; a rule without a value
    # condition still fires, and nothing raises (RecursionError least of all).
    assert fired([{"value": EXISTS}, {"value": ABSENT}, {}], value) == ["r2"]


@pytest.mark.parametrize("limit", [1, 3, DEFAULT_MAX_JSON_DEPTH])
def test_json_at_the_depth_limit_parses_one_deeper_does_not(limit: int) -> None:
    at = json.dumps({"a": json.loads("[" * (limit - 1) + "]" * (limit - 1))}) if limit > 1 else None
    deeper = json.dumps({"a": json.loads("[" * limit + "]" * limit)})
    limits = MatchLimits(max_json_depth=limit)
    if at is not None:
        assert fired([{"value": EXISTS}], at, limits) == ["r0"]
    assert fired([{"value": EXISTS}], deeper, limits) == []
    assert fired([{"value": EXISTS}], '{"a": 1}', limits) == ["r0"]


def _depth(doc: object) -> int:
    if isinstance(doc, list):
        return 1 + max(map(_depth, doc), default=0)
    if isinstance(doc, dict):
        return 1 + max(map(_depth, doc.values()), default=0)
    return 0


# Strings full of what could fool a bracket counter: brackets, quotes, backslashes.
tricky = st.text(alphabet='[]{}"\\ab\n', max_size=8)
json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky, inner, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(doc=json_docs, limit=st.integers(1, 6), indent=st.sampled_from([None, 1]))
def test_json_depth_is_exact_for_json(doc: object, limit: int, indent: int | None) -> None:
    assert json_too_deep(json.dumps(doc, indent=indent), limit) == (_depth(doc) > limit)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet='[]{}"\\a:,1 ', max_size=60), limit=st.integers(1, 4))
def test_json_depth_bounds_what_the_parser_would_reach(text: str, limit: int) -> None:
    # On any text, valid JSON or not, the check never raises, and when it lets a text
    # through that parses, the document is within the limit.
    if not json_too_deep(text, limit):
        try:
            doc = json.loads(text)
        except ValueError:
            return
        assert _depth(doc) <= limit


# -- value length -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [{"equals": "x" * 11}, {"regex": "x"}, {"json": [{"path": "a", "exists": False}]}],
)
@pytest.mark.parametrize("binary", [False, True])
def test_a_value_over_the_length_limit_fails_its_value_conditions(
    condition: dict[str, Any], binary: bool
) -> None:
    limits = MatchLimits(max_value_length=10)
    at, over = ("x" * 10, "x" * 11) if "json" not in condition else ('"xxxxxxxx"', '"xxxxxxxxx"')
    values = (at.encode(), over.encode()) if binary else (at, over)
    assert fired([{"value": condition}, {}], values[1], limits) == ["r1"]
    if "equals" not in condition:  # equals needs 11 characters: only "over" could match
        assert fired([{"value": condition}, {}], values[0], limits) == ["r0", "r1"]


@pytest.mark.parametrize(
    "fields", [{"max_value_length": 0}, {"max_json_depth": 0}, {"max_json_depth": 501}]
)
def test_limits_out_of_range_are_config_errors(fields: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        MatchLimits(**fields)


def test_the_config_file_sets_the_limits(tmp_path: Path) -> None:
    base = "kafka: {bootstrap_servers: localhost:9092}\nnamespaces: {default: {}}\n"
    path = tmp_path / "connector.yaml"
    path.write_text(base)
    assert load_config(path, env={}).pipeline.match_limits() == MatchLimits()
    path.write_text(base + "pipeline: {match_max_value_length: 4096, match_max_json_depth: 16}\n")
    limits = load_config(path, env={}).pipeline.match_limits()
    assert limits == MatchLimits(max_value_length=4096, max_json_depth=16)
    path.write_text(base + "pipeline:\n  match_max_json_depth: 100000\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path, env={})
    assert info.value.errors[0].startswith(f"{path}:4 pipeline.match_max_json_depth: ")
