"""Payload templates (connector.common.template): a body shaped from the action, checked
when the config is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.common.template import Template
from connector.config import ConfigFileError, load_config
from kec.action import Action, ActionKind

ACTION = Action(
    rule="ship",
    kind=ActionKind.START_WORKFLOW,
    target="hook",
    namespace="shop",
    event_ids=("orders/0/7",),
    event_key="order-7",
    workflow="shipping",
    context="exec-1",
    payload={"key": "order-7", "value": {"order_id": 7, "items": [{"sku": "a-1"}]}},
)


def test_a_whole_placeholder_keeps_the_json_type_and_text_is_substituted() -> None:
    template = Template(
        {
            "id": "{{ action_id }}",
            "order": "{{value.order_id}}",
            "first_sku": "{{ value.items.0.sku }}",
            "items": "{{ value.items }}",
            "title": "order {{ value.order_id }} for {{ workflow }} ({{ value.items }})",
            "missing": "{{ value.nope }}",
            "missing_in_text": "[{{ value.nope }}]",
            "static": ["as is", 3, True, None],
            "ids": "{{ event_ids }}",
        }
    )
    assert template.render(ACTION) == {
        "id": ACTION.action_id,
        "order": 7,
        "first_sku": "a-1",
        "items": [{"sku": "a-1"}],
        "title": 'order 7 for shipping ([{"sku":"a-1"}])',
        "missing": None,
        "missing_in_text": "[]",
        "static": ["as is", 3, True, None],
        "ids": ["orders/0/7"],
    }
    assert template.render_bytes(ACTION).startswith(b'{"id":"')


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"x": "{{ nope.a }}"}, "unknown 'nope'"),
        ({"x": "{{ value..a }}"}, "is not a dotted path"),
        ({"x": "oops {{ value"}, "unclosed"),
    ],
)
def test_bad_placeholders_are_refused(source: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Template(source)


def test_validate_names_the_templates_line(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 'localhost:1'}\n"
        "namespaces: {shop: {}}\n"
        "targets:\n"
        "  hook:\n"
        "    type: webhook\n"
        "    url: http://127.0.0.1:1/x\n"
        "    template: {order: '{{ valu.order_id }}'}\n"
    )
    with pytest.raises(ConfigFileError) as refused:
        load_config(config)
    (error,) = refused.value.errors
    assert error.startswith(f"{config}:7 targets.hook.template")
    assert "unknown 'valu'" in error


@pytest.mark.parametrize(
    ("target", "line", "field", "message"),
    [
        ("{type: command, argv: [notify, '{{ vale.id }}']}", 5, "hook.argv", "unknown 'vale'"),
        ("{type: command, argv: 'notify {{ value }}', shell: true}", 5, "hook.shell",
         "cannot be used with shell"),
        ("{type: command, argv: ['{{ value.bin }}']}", 5, "hook.argv", "the program itself"),
        ("{type: prefect, url: 'http://p:1/api', template: ['{{ value }}']}", 5,
         "hook.template", "must be a mapping"),
        ("{type: airflow, url: 'http://a:1', token: t, template: '{{ value }}'}", 5,
         "hook.template", "must be a mapping"),
        ("{type: temporal, task_queue: q, template: {x: '{{ nope }}'}}", 5, "hook.template",
         "unknown 'nope'"),
    ],
)  # fmt: skip
def test_every_templated_target_is_checked_at_load(
    tmp_path: Path, target: str, line: int, field: str, message: str
) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 'localhost:1'}\n"
        "namespaces: {shop: {}}\n"
        "targets:\n"
        "  hook:\n"
        f"    {target}\n"
    )
    with pytest.raises(ConfigFileError) as refused:
        load_config(config)
    (error,) = refused.value.errors
    assert error.startswith(f"{config}:{line} targets.{field}"), error
    assert message in error


def test_templated_targets_load(tmp_path: Path) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 'localhost:1'}\n"
        "namespaces: {shop: {}}\n"
        "targets:\n"
        "  notify: {type: command, argv: [notify, '--order={{ value.id }}']}\n"
        "  flows: {type: prefect, url: 'http://p:1/api', template: {order: '{{ value.id }}'}}\n"
        "  wf: {type: temporal, task_queue: q, template: '{{ value }}'}\n"
    )
    cfg = load_config(config)
    assert cfg.targets["notify"].argv == ["notify", "--order={{ value.id }}"]  # type: ignore[union-attr]
    assert cfg.targets["flows"].template == {"order": "{{ value.id }}"}  # type: ignore[union-attr]
