"""Payload templates: the body a target sends, shaped from the action. Pure.

A template is JSON (in the YAML: a mapping, a list or a scalar) whose strings may hold
placeholders ``{{ PATH }}``. A string that is one placeholder and nothing else becomes the
value at PATH with its own JSON type (an object stays an object, a number a number; a
path that leads nowhere gives ``null``); a placeholder inside a longer string is replaced
by the value as text (strings as they are, anything else as compact JSON, nothing for a
path that leads nowhere). There are no escapes: a string without ``{{`` is sent as it is,
and one with an unclosed ``{{`` is refused.

PATH is dotted; its first part is one of :data:`ROOTS`, the rest walks objects by key and
lists by index (``events.paid.value.amount``, ``value.items.0.sku``):

* the action's own fields: ``action_id``, ``rule``, ``kind``, ``target``, ``namespace``,
  ``event_key``, ``event_ids``, ``workflow``, ``task``, ``context``;
* ``payload``, the event(s) as the action carries them, and two shortcuts into it:
  ``value`` (``payload.value``: the event's value, a JSON object when it is one) and
  ``events`` (``payload.events``: an ``all_of`` action's events by key, a ``batch``
  action's as a list: ``events.0.value``).

A template is compiled when the config is loaded, so ``validate`` names a placeholder
that is malformed or has an unknown root, with its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from kec.action import Action
from kec.jsontext import dumps

__all__ = ["ROOTS", "Template", "has_placeholder"]

ROOTS = frozenset(
    {
        "action_id", "rule", "kind", "target", "namespace", "event_key", "event_ids",
        "workflow", "task", "context", "payload", "value", "events",
    }
)  # fmt: skip
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[^.\s{}]+)*")
_MISSING = object()

_Render = Callable[[Mapping[str, Any]], Any]


def _root_values(action: Action) -> dict[str, Any]:
    payload = action.payload
    return {
        "action_id": action.action_id,
        "rule": action.rule,
        "kind": action.kind.value,
        "target": action.target,
        "namespace": action.namespace,
        "event_key": action.event_key,
        "event_ids": list(action.event_ids),
        "workflow": action.workflow,
        "task": action.task,
        "context": action.context,
        "payload": payload,
        "value": payload.get("value", _MISSING),
        "events": payload.get("events", _MISSING),
    }


def _lookup(path: tuple[str, ...]) -> _Render:
    def find(roots: Mapping[str, Any]) -> Any:
        node = roots.get(path[0], _MISSING)
        for part in path[1:]:
            if isinstance(node, dict):
                node = node.get(part, _MISSING)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
            if node is _MISSING:
                return _MISSING
        return node

    return find


def _path(text: str) -> tuple[str, ...]:
    if not _PATH.fullmatch(text):
        raise ValueError(f"template placeholder {{{{ {text} }}}} is not a dotted path")
    parts = tuple(text.split("."))
    if parts[0] not in ROOTS:
        raise ValueError(
            f"template placeholder {{{{ {text} }}}}: unknown {parts[0]!r} "
            f"(known: {', '.join(sorted(ROOTS))})"
        )
    return parts


def _as_text(value: Any) -> str:
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _compile(node: Any) -> _Render:
    if isinstance(node, dict):
        parts = [(str(k), _compile(v)) for k, v in node.items()]
        return lambda roots: {k: render(roots) for k, render in parts}
    if isinstance(node, list | tuple):
        items = [_compile(v) for v in node]
        return lambda roots: [render(roots) for render in items]
    if not isinstance(node, str) or "{{" not in node:
        return lambda roots: node
    whole = _PLACEHOLDER.fullmatch(node.strip())
    if whole is not None:
        find = _lookup(_path(whole[1]))

        def value(roots: Mapping[str, Any]) -> Any:
            found = find(roots)
            return None if found is _MISSING else found

        return value
    pieces: list[str | _Render] = []
    at = 0
    for match in _PLACEHOLDER.finditer(node):
        pieces.append(node[at : match.start()])
        pieces.append(_lookup(_path(match[1])))
        at = match.end()
    pieces.append(node[at:])
    if "{{" in "".join(p for p in pieces if isinstance(p, str)):
        raise ValueError(f"template string {node!r} has an unclosed {{{{")
    return lambda roots: "".join(p if isinstance(p, str) else _as_text(p(roots)) for p in pieces)


class Template:
    """A compiled template; :meth:`render` gives the body for one action."""

    def __init__(self, source: Any) -> None:
        """Raises :class:`ValueError` naming a malformed or unknown placeholder."""
        self.source = source
        self._render = _compile(source)

    def render(self, action: Action) -> Any:
        """The template filled from ``action``: JSON-ready data."""
        return self._render(_root_values(action))

    def render_bytes(self, action: Action) -> bytes:
        """:meth:`render` as JSON (a body, a record value)."""
        return dumps(self.render(action)).encode()

    def render_text(self, action: Action) -> str:
        """:meth:`render` as one string (a command's argument): a string as it is,
        anything else as compact JSON, nothing for null."""
        return _as_text(self.render(action))


def has_placeholder(text: str) -> bool:
    """Whether ``text`` would be filled in by a template (it holds ``{{``)."""
    return "{{" in text
