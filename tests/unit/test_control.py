"""The pure parts of a config reload (connector/control.py): what differs between two
configs, what a reload refuses, how a failed one reads; the rule switch's pauses; a
paused target's lanes in the dispatcher's schedule; Control's bookkeeping over a fake
applier (the running parts are tests/integration/test_reload.py's)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from connector.config import ConnectorConfig
from connector.control import ConfigDiff, ConfigSource, Control, diff_configs, restart_only
from connector.dispatch.lanes import PartitionBook
from connector.dispatch.schedule import take_due
from connector.rules.switch import RuleSwitch
from connector.targets.base import Target
from kec.action import Action, ActionKind
from kec.errors import ConfigError, TargetError
from kec.evaluation import Evaluation, Result
from kec.event import Event

BASE = """\
kafka: {bootstrap_servers: "127.0.0.1:9092"}
group_id: g
namespaces: {shop: {}}
checkpoint: {path: state/c.db}
targets:
  log: {type: log, path: a.jsonl}
  hook: {type: webhook, url: "http://127.0.0.1:9/x"}
rules:
  - {name: one, namespace: shop, key: a, action: notify, target: log}
  - {name: two, namespace: shop, key: b, action: notify, target: hook}
"""


def _source(tmp_path: Path, text: str = BASE) -> ConfigSource:
    path = tmp_path / "connector.yaml"
    path.write_text(text)
    return ConfigSource(path)


def _load(tmp_path: Path, text: str) -> ConnectorConfig:
    return _source(tmp_path, text).load()


def test_the_same_file_differs_in_nothing(tmp_path: Path) -> None:
    diff = diff_configs(_load(tmp_path, BASE), _load(tmp_path, BASE))
    assert diff == ConfigDiff()
    assert not diff.changed


def test_rules_added_removed_and_changed_by_name(tmp_path: Path) -> None:
    new = BASE.replace(
        "  - {name: one, namespace: shop, key: a, action: notify, target: log}\n", ""
    ).replace("key: b,", "key: c,") + (
        "  - {name: three, namespace: shop, key: '*', action: notify, target: log}\n"
    )
    diff = diff_configs(_load(tmp_path, BASE), _load(tmp_path, new))
    assert (diff.rules_added, diff.rules_removed, diff.rules_changed) == (
        ("three",),
        ("one",),
        ("two",),
    )
    assert diff.rules and not diff.targets and diff.changed
    assert diff.restart_only == ()


def test_targets_added_removed_and_changed_by_name(tmp_path: Path) -> None:
    new = (
        BASE.replace("path: a.jsonl", "path: b.jsonl")
        .replace(
            '  hook: {type: webhook, url: "http://127.0.0.1:9/x"}\n',
            '  cmd: {type: command, argv: ["true"]}\n',
        )
        .replace("target: hook", "target: cmd")
    )
    diff = diff_configs(_load(tmp_path, BASE), _load(tmp_path, new))
    assert (diff.targets_added, diff.targets_removed, diff.targets_changed) == (
        ("cmd",),
        ("hook",),
        ("log",),
    )
    assert diff.rules_changed == ("two",)
    assert diff.restart_only == ()


def test_retry_limits_and_rule_order_are_changes_a_reload_makes(tmp_path: Path) -> None:
    old = _load(tmp_path, BASE)
    retry = diff_configs(old, _load(tmp_path, BASE + "retry: {max_attempts: 3}\n"))
    assert retry.retry_changed and retry.changed and not retry.rules
    limits = diff_configs(old, _load(tmp_path, BASE + "pipeline: {match_max_json_depth: 5}\n"))
    assert limits.limits_changed and limits.rules and limits.restart_only == ()
    lines = BASE.splitlines(keepends=True)
    swapped = "".join([*lines[:-2], lines[-1], lines[-2]])
    order = diff_configs(old, _load(tmp_path, swapped))
    assert order.rules_reordered and order.changed
    assert (order.rules_added, order.rules_removed, order.rules_changed) == ((), (), ())


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        (("group_id: g", "group_id: h"), "group_id"),
        (("path: state/c.db", "path: state/d.db"), "checkpoint.path"),
        (('"127.0.0.1:9092"', '"127.0.0.1:9093"'), "kafka.bootstrap_servers"),
        (("shop: {}", "shop: {topics: [orders]}"), "namespaces.shop.topics"),
    ],
)
def test_settings_that_need_a_restart_are_named(
    tmp_path: Path, change: tuple[str, str], setting: str
) -> None:
    old, new = _load(tmp_path, BASE), _load(tmp_path, BASE.replace(*change))
    assert restart_only(old, new) == (setting,)


def test_a_pipeline_setting_other_than_the_match_limits_needs_a_restart(tmp_path: Path) -> None:
    old = _load(tmp_path, BASE)
    new = _load(tmp_path, BASE + "pipeline: {batch_size: 10, match_max_value_length: 99}\n")
    assert restart_only(old, new) == ("pipeline.batch_size",)
    assert restart_only(old, _load(tmp_path, BASE + "metrics: {port: 9999}\n")) == ("metrics",)


class _Applier:
    """Records what Control asks of the running parts; refuses when told to."""

    def __init__(self) -> None:
        self.applied: list[tuple[ConfigDiff, int]] = []
        self.paused: list[tuple[frozenset[str], frozenset[str]]] = []
        self.refuse: Exception | None = None

    def apply(self, config: ConnectorConfig, text: str, diff: ConfigDiff, version: int) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.applied.append((diff, version))

    def set_paused(self, rules: frozenset[str], targets: frozenset[str]) -> None:
        self.paused.append((rules, targets))


def _control(tmp_path: Path) -> tuple[Control, _Applier, Path]:
    source = _source(tmp_path)
    applier = _Applier()
    return Control(applier, source.load(), source=source), applier, source.path


def test_a_reload_that_changes_something_is_the_next_rules_version(tmp_path: Path) -> None:
    control, applier, path = _control(tmp_path)
    assert control.rules_version == 1
    unchanged = control.reload()
    assert not unchanged.changed and unchanged.rules_version == 1 and applier.applied == []
    assert unchanged.summary() == "nothing changed"
    path.write_text(BASE.replace("key: a,", "key: z,"))
    result = control.reload()
    assert (result.rules_version, result.rules_changed, control.rules_version) == (2, ("one",), 2)
    assert [v for _, v in applier.applied] == [2]
    assert result.summary() == "rules changed: one"


def test_an_invalid_file_is_refused_in_one_line_with_its_line(tmp_path: Path) -> None:
    control, applier, path = _control(tmp_path)
    path.write_text(BASE.replace("action: notify, target: hook", "action: notify, target: nope"))
    with pytest.raises(ConfigError) as refused:
        control.reload()
    message = str(refused.value)
    assert "\n" not in message
    assert f"{path}:10" in message and "nope" in message
    path.write_text(BASE + "rules: [\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+ \(yaml\)"):
        control.reload()
    assert applier.applied == [] and control.rules_version == 1


def test_a_restart_only_change_is_refused_naming_it(tmp_path: Path) -> None:
    control, applier, path = _control(tmp_path)
    path.write_text(BASE.replace("group_id: g", "group_id: h").replace("key: a,", "key: z,"))
    with pytest.raises(ConfigError, match=r"group_id cannot change while run runs") as refused:
        control.reload()
    assert "\n" not in str(refused.value)
    assert applier.applied == [] and control.rules_version == 1
    assert control.config is not None and control.config.group_id == "g"


def test_a_refusal_of_the_running_parts_keeps_the_version(tmp_path: Path) -> None:
    control, applier, path = _control(tmp_path)
    applier.refuse = ConfigError("target hook could not be opened")
    path.write_text(BASE.replace('x"}', 'y"}'))
    with pytest.raises(ConfigError, match="could not be opened"):
        control.reload()
    assert control.rules_version == 1


def test_pause_and_resume_by_name_and_kind(tmp_path: Path) -> None:
    control, applier, path = _control(tmp_path)
    control.pause("rule", "one")
    control.pause("rule", "one")  # idempotent: asked once
    control.pause("target", "hook")
    assert control.paused() == {"rules": ["one"], "targets": ["hook"]}
    assert applier.paused == [
        (frozenset({"one"}), frozenset()),
        (frozenset({"one"}), frozenset({"hook"})),
    ]
    with pytest.raises(ConfigError, match=r"no rule named 'nine' \(the rules: one, two\)"):
        control.pause("rule", "nine")
    with pytest.raises(ConfigError, match="no target named"):
        control.resume("target", "one")
    with pytest.raises(ConfigError, match="a rule or a target"):
        control.pause("partition", "one")  # type: ignore[arg-type]
    control.resume("target", "hook")
    assert control.paused() == {"rules": ["one"], "targets": []}
    # A reload that removes a paused rule drops its pause; the others stay.
    path.write_text(
        BASE.replace("  - {name: one, namespace: shop, key: a, action: notify, target: log}\n", "")
    )
    control.reload()
    assert control.paused() == {"rules": [], "targets": []}
    assert applier.paused[-1] == (frozenset(), frozenset())


def _event(key: str) -> Event:
    return Event(key=key, value="1", namespace="shop", topic="t", partition=0, offset=0)


def _action(rule: str, target: str = "log", key: str = "a") -> Action:
    return Action(
        rule=rule, kind=ActionKind.NOTIFY, target=target, namespace="shop",
        event_ids=(f"t/0/{rule}",), event_key=key,
    )  # fmt: skip


class _Engine:
    def __init__(self, rules: list[str]) -> None:
        self.rules = rules

    def state_keys(self, event: Event) -> list[str]:
        return []

    def evaluate(self, event: Event, state: Mapping[str, str | None]) -> Evaluation:
        return Result([_action(r) for r in self.rules], {"k": "v"})


def test_the_switch_drops_the_actions_of_paused_rules_and_keeps_their_state() -> None:
    switch = RuleSwitch(_Engine(["one", "two"]))
    assert [a.rule for a in switch.evaluate(_event("a"), {}).actions] == ["one", "two"]
    switch.paused = frozenset({"one"})
    result = switch.evaluate(_event("a"), {})
    assert [a.rule for a in result.actions] == ["two"]
    assert dict(result.state_updates) == {"k": "v"}
    switch.replace(_Engine(["three"]), 2)
    assert switch.version == 2
    assert [a.rule for a in switch.evaluate(_event("a"), {}).actions] == ["three"]


class _Sink(Target):
    def __init__(self, name: str) -> None:
        self.name = name

    def deliver(self, action: Action) -> None:
        raise AssertionError("not called here")


def test_a_paused_targets_lanes_wait_without_starving_the_others() -> None:
    book = PartitionBook(("t", 0), 1, 0, 0)
    book.queue(0, [_action("r", "hook", "a"), _action("r", "hook", "a"), _action("r", "log", "b")])
    targets = {"hook": _Sink("hook"), "log": _Sink("log")}
    refused: list[TargetError] = []

    def refuse(book: PartitionBook, entry: object, error: TargetError) -> None:
        refused.append(error)

    room = {"hook": 5, "log": 5}
    taken = take_due([book], targets, room, 0.0, refuse, frozenset({"hook"}))
    assert list(taken) == ["log"]
    # Paused: its lanes have no turn any more, whatever the rounds.
    assert take_due([book], targets, {"hook": 5, "log": 5}, 1.0, refuse, frozenset({"hook"})) == {}
    book.wake("hook")
    again = take_due([book], targets, {"hook": 5, "log": 5}, 2.0, refuse, frozenset())
    assert [e.aseq for _, e in again["hook"]] == [0]  # the lane's head, in order
    assert refused == [] and book.size == 3
