"""Load a YAML config file: parse, interpolate ``${ENV}``, validate, locate each error.

ruamel.yaml's round-trip loader remembers the line of every key and list item, so each
pydantic error (whose ``loc`` is a field path) is reported as ``FILE:LINE PATH: message``.
Every error of the file is reported at once; only a YAML syntax error stops earlier,
since nothing after it can be trusted.

Interpolation applies to scalar string values (never keys): ``${NAME}`` is the variable's
value, ``${NAME:-default}`` the default when it is unset or empty, ``$$`` a literal ``$``.
An unset variable without default is an error. Interpolated text is never echoed back in
messages, so a secret passed through the environment stays out of logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from connector.config.models import (
    CROSS_CHECKED,
    DEFAULT_HTTP_NAMESPACE,
    DEFAULT_HTTP_TOPIC,
    ConnectorConfig,
    Loc,
    RuleFacts,
    cross_check,
)
from connector.targets import BASE_DIR
from kec.errors import ConfigFileError
from kec.event import DEFAULT_TOPIC_PREFIX

__all__ = ["ConfigFileError", "load_config"]

# `$$` (an escaped dollar) or `${NAME}` / `${NAME:-default}`, or a malformed `${`.
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> ConnectorConfig:
    """The validated config in ``path``; ``env`` (default ``os.environ``) feeds ``${...}``.

    Raises :class:`ConfigFileError` listing every error found, each with file and line.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(name, [f"{name}: cannot read: {exc}"]) from exc
    try:
        tree = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        # The problem only: ruamel's full message quotes the line, which may hold a secret.
        problem = exc.problem or exc.context or "invalid YAML"
        if isinstance(exc, DuplicateKeyError):
            # ruamel quotes both values of the key, and either may be a secret.
            problem = problem.split(" with value ", 1)[0]
        raise ConfigFileError(name, [f"{name}:{line} (yaml): {problem}"]) from exc
    except YAMLError as exc:
        raise ConfigFileError(name, [f"{name}:1 (yaml): {type(exc).__name__}"]) from exc
    if tree is None:
        raise ConfigFileError(name, [f"{name}:1 (top level): the file is empty"])
    if not isinstance(tree, CommentedMap):
        raise ConfigFileError(
            name, [f"{name}:1 (top level): must be a mapping of sections, not a list or value"]
        )

    found: list[tuple[Loc, str]] = []
    data = _interpolate(tree, (), os.environ if env is None else env, found)
    found.extend(_cross_check(data))
    context = {BASE_DIR: Path(path).resolve().parent, CROSS_CHECKED: True}
    config: ConnectorConfig | None = None
    try:
        config = ConnectorConfig.model_validate(data, context=context)
    except ValidationError as exc:
        found.extend((tuple(err["loc"]), _message(err["msg"])) for err in exc.errors())
    if found or config is None:
        raise ConfigFileError(name, _locate_all(name, tree, found))
    return config


def _interpolate(node: Any, loc: Loc, env: Mapping[str, str], found: list[tuple[Loc, str]]) -> Any:
    """Plain Python data from the YAML tree, with ``${...}`` replaced in strings."""
    if isinstance(node, CommentedMap):
        return {k: _interpolate(v, (*loc, k), env, found) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_interpolate(v, (*loc, i), env, found) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return str(node) if isinstance(node, str) else node  # plain str, not ruamel's kinds

    def replace(match: re.Match[str]) -> str:
        whole, name, default = match.group(0), match.group(1), match.group(2)
        if whole == "$$":
            return "$"
        if name is None:
            found.append((loc, "malformed ${...} reference (use ${NAME} or ${NAME:-default})"))
            return whole
        value = env.get(name)
        if value:
            return value
        if default is not None:
            return default
        if value is None:
            found.append((loc, f"environment variable {name} is not set (and has no default)"))
        return ""

    return _REFERENCE.sub(replace, node)


def _cross_check(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """:func:`cross_check` on raw data, skipping parts too malformed to check."""
    namespaces: dict[str, list[str]] = {}
    raw_ns = data.get("namespaces")
    prefix = data.get("topic_prefix", DEFAULT_TOPIC_PREFIX)
    if isinstance(raw_ns, dict):
        for ns, spec in raw_ns.items():
            topics = spec.get("topics") if isinstance(spec, dict) else None
            if topics is None and isinstance(prefix, str):
                topics = [f"{prefix}{ns}"]  # NamespaceConfig.topics_of's default
            namespaces[str(ns)] = (
                [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []
            )
    http = data.get("http")
    if isinstance(http, dict):
        topic = http.get("topic", DEFAULT_HTTP_TOPIC)
        namespace = http.get("namespace", DEFAULT_HTTP_NAMESPACE)
        if isinstance(topic, str) and isinstance(namespace, str):
            namespaces.setdefault(namespace, []).append(topic)
    raw_targets = data.get("targets")
    targets: dict[str, str | None] = {}
    if isinstance(raw_targets, dict):
        for name, spec in raw_targets.items():
            kind = spec.get("type") if isinstance(spec, dict) else None
            targets[str(name)] = kind if isinstance(kind, str) else None
    raw_rules = data.get("rules")
    rules: list[RuleFacts | None] = []
    if isinstance(raw_rules, list):
        for rule in raw_rules:
            if not isinstance(rule, dict):
                rules.append(None)
                continue
            fields = [rule.get(f) for f in ("name", "namespace", "target", "action")]
            name, namespace, target, action = (f if isinstance(f, str) else None for f in fields)
            rules.append((name, namespace, target, action))
    problems = cross_check(namespaces, targets, rules)
    if not isinstance(raw_ns, dict):
        # Without namespaces, "unknown namespace" would only repeat the namespaces error.
        problems = [p for p in problems if p[0][-1] != "namespace"]
    return problems


def _message(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if len(msg) > 1 and msg[0].isupper() and msg[1].islower():
        msg = msg[0].lower() + msg[1:]
    return msg


def _locate_all(name: str, tree: CommentedMap, found: list[tuple[Loc, str]]) -> list[str]:
    """One line per (line, path), messages of the same spot joined (union branches)."""
    by_spot: dict[tuple[int, str], list[str]] = {}
    for loc, msg in found:
        line, path = _locate(tree, loc)
        messages = by_spot.setdefault((line, path), [])
        if msg not in messages:
            messages.append(msg)
    return [
        f"{name}:{line} {path}: {'; '.join(msgs)}" for (line, path), msgs in sorted(by_spot.items())
    ]


def _locate(tree: CommentedMap, loc: Loc) -> tuple[int, str]:
    """The 1-based line of ``loc`` in the file and its path as written in the file.

    pydantic's ``loc`` may hold parts that are not in the data: a discriminated union's
    tag (``targets.x.command.timeout``) or a union branch's type (``...str``). Those are
    skipped; a missing key at the end (a required field) is kept and gets its parent's line.
    """
    node: Any = tree
    line = tree.lc.line + 1
    parts: list[str | int] = []
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, CommentedMap) and part in node:
            if part in node.lc.data:  # a key merged in by `<<: *anchor` has no line here
                line = node.lc.key(part)[0] + 1
            node = node[part]
            parts.append(part)
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
            parts.append(part)
        elif isinstance(node, CommentedMap) and last and isinstance(part, str) and part != "[key]":
            parts.append(part)  # a required field that is missing
        # else: a union tag or branch name, not a place in the file
    return line, _path(parts)


def _path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(str(part)):
            out += f".{part}"
        else:
            out += f'["{part}"]'  # e.g. a librdkafka property such as "compression.type"
    return out.lstrip(".") or "(top level)"
