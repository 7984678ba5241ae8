"""Load a YAML config file: parse, interpolate ``${ENV}``, validate, locate each error.

ruamel.yaml's round-trip loader remembers the line of every key and list item, so each
pydantic error (whose ``loc`` is a field path) is reported as ``FILE:LINE PATH: message``.
Every error of the file is reported at once; only a YAML syntax error stops earlier,
since nothing after it can be trusted. An unknown key (a typo) says which known key it
is closest to, from the config's JSON Schema, and is listed before the other errors of
its mapping, which it often causes (``taks:`` leaves ``task`` missing).

Interpolation applies to scalar string values (never keys): ``${NAME}`` (or
``${env:NAME}``) is the variable's value, ``${NAME:-default}`` the default when it is
unset or empty, ``${file:PATH}`` the content of a file (PATH relative to the config file's
folder; one final line end dropped: the shape of a mounted Kubernetes or Docker secret),
``$$`` a literal ``$``. An unset variable without default, or a file that cannot be read,
is an error. Interpolated text is never echoed back in messages, and what ``${file:}``
read is a secret wherever it lands (:attr:`ConnectorConfig.file_secrets`, which ``run``
and the tools redact from every log line and message).
"""

from __future__ import annotations

import difflib
import functools
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
    FORMAT_FIELDS,
    ConnectorConfig,
    Loc,
    RuleFacts,
    cross_check,
)
from connector.config.paths import BASE_DIR, DATA_DIR, data_dir_of
from kec.errors import ConfigFileError
from kec.event import DEFAULT_TOPIC_PREFIX

__all__ = ["ConfigFileError", "load_config", "read_config_text"]

# `$$` (an escaped dollar), `${NAME}` / `${env:NAME}` (either with `:-default`),
# `${file:PATH}`, or a malformed `${`.
_REFERENCE = re.compile(
    r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{file:([^}]+)\}|\$\{"
)
# A secret file's content is used whole, but for the line end editors and `echo` add.
_MAX_SECRET_FILE = 64 * 1024
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    *,
    data_dir: str | Path | None = None,
    text: str | None = None,
) -> ConnectorConfig:
    """The validated config in ``path``; ``env`` (default ``os.environ``) feeds ``${...}``.

    Relative paths of files the connector writes (the sqlite store, log targets' files)
    are relative to the data directory: ``data_dir``, else ``env``'s ``KEC_DATA_DIR``,
    else the config file's folder (:func:`connector.config.paths.data_dir_of`); paths it
    reads (TLS files, a command's ``cwd``) to the config file's folder.
    ``text``: the file's content as read already (a reload validated once and applied
    by several processes), instead of reading ``path`` again.
    Raises :class:`ConfigFileError` listing every error found, each with file and line.
    """
    name = str(path)
    if text is None:
        text = read_config_text(path)
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
    environ = os.environ if env is None else env
    files = _SecretFiles(Path(path).resolve().parent)
    data = _interpolate(tree, (), environ, found, files)
    found.extend(_cross_check(data))
    context = {
        BASE_DIR: Path(path).resolve().parent,
        DATA_DIR: data_dir_of(path, data_dir, environ),
        CROSS_CHECKED: True,
    }
    config: ConnectorConfig | None = None
    try:
        config = ConnectorConfig.model_validate(data, context=context)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                found.append((loc, unknown_key(loc)))
            else:
                found.append((loc, _message(err["msg"])))
    if found or config is None:
        raise ConfigFileError(name, _locate_all(name, tree, found))
    config.keep_file_secrets(tuple(files.values))
    return config


def read_config_text(path: str | Path) -> str:
    """The text of config file ``path``; :class:`ConfigFileError` when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(str(path), [f"{path}: cannot read: {exc}"]) from exc


class _SecretFiles:
    """``${file:PATH}`` references: each file read once (PATH relative to the config
    file's folder); every value read is a secret (:attr:`values`)."""

    def __init__(self, base: Path) -> None:
        self._base = base
        self._read: dict[str, str | OSError | ValueError] = {}
        self.values: list[str] = []

    def read(self, reference: str) -> str:
        """The file's text without its last line end; raises OSError or ValueError."""
        if reference not in self._read:
            self._read[reference] = self._load(reference)
        value = self._read[reference]
        if isinstance(value, Exception):
            raise value
        return value

    def _load(self, reference: str) -> str | OSError | ValueError:
        path = self._base / Path(reference).expanduser()
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_SECRET_FILE + 1)
        except OSError as exc:
            return OSError(f"cannot read {path}: {exc.strerror or exc}")
        if len(data) > _MAX_SECRET_FILE:
            return ValueError(f"{path} is over {_MAX_SECRET_FILE // 1024} KiB: not a secret")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return ValueError(f"{path} is not UTF-8 text")
        text = text.removesuffix("\n").removesuffix("\r")
        if text:
            self.values.append(text)
        return text


UNKNOWN_KEY = "unknown key"


def unknown_key(loc: Loc) -> str:
    """The message for an unknown key at ``loc``: the closest known key, else all of them."""
    key = str(loc[-1])
    known = _known_keys(_schema(), loc[:-1])
    if not known:
        return f"{UNKNOWN_KEY} `{key}`"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{UNKNOWN_KEY} `{key}`: did you mean `{close[0]}`?"
    if len(loc) >= 2 and key in _known_keys(_schema(), loc[:-2]):
        outer = _path(list(loc[:-2])) if len(loc) > 2 else "the top level"
        return f"{UNKNOWN_KEY} `{key}` here: it is a key of {outer}, one level up"
    return f"{UNKNOWN_KEY} `{key}` (known keys: {', '.join(sorted(known))})"


@functools.cache
def _schema() -> dict[str, Any]:
    return ConnectorConfig.model_json_schema(mode="validation")


def _known_keys(schema: dict[str, Any], loc: Loc) -> list[str]:
    """The property names of the object at ``loc`` in ``schema`` ([] when not found).

    ``loc`` is pydantic's, so it may hold a discriminated union's tag (``targets.x.command``)
    or a union branch's name; those are followed or skipped like the file's own keys.
    """
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1], {})
        return node

    def objects(node: Any) -> list[dict[str, Any]]:
        """The object schemas ``node`` may be: itself, or its union's branches."""
        node = resolve(node)
        if not isinstance(node, dict):
            return []
        branches = node.get("anyOf") or node.get("oneOf")
        if branches:
            return [b for branch in branches for b in objects(branch)]
        return [node]

    nodes = objects(schema)
    for part in loc:
        following: list[dict[str, Any]] = []
        for node in nodes:
            props = node.get("properties", {})
            if isinstance(part, str) and part in props:
                following += objects(props[part])
            elif isinstance(part, int) and "items" in node:
                following += objects(node["items"])
            elif isinstance(node.get("additionalProperties"), dict):
                following += objects(node["additionalProperties"])
        # A discriminated union's tag: keep the branch it names.
        tagged = [n for n in nodes if n.get("properties", {}).get("type", {}).get("const") == part]
        nodes = tagged or following or nodes
    return sorted({key for node in nodes for key in node.get("properties", {})})


def _interpolate(
    node: Any, loc: Loc, env: Mapping[str, str], found: list[tuple[Loc, str]], files: _SecretFiles
) -> Any:
    """Plain Python data from the YAML tree, with ``${...}`` replaced in strings."""
    if isinstance(node, CommentedMap):
        return {k: _interpolate(v, (*loc, k), env, found, files) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [_interpolate(v, (*loc, i), env, found, files) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return str(node) if isinstance(node, str) else node  # plain str, not ruamel's kinds

    def replace(match: re.Match[str]) -> str:
        whole, name, default, file = match.group(0), match.group(1), match.group(2), match.group(3)
        if whole == "$$":
            return "$"
        if file is not None:
            try:
                return files.read(file.strip())
            except (OSError, ValueError) as exc:
                found.append((loc, f"${{file:...}}: {exc}"))
                return ""
        if name is None:
            found.append(
                (
                    loc,
                    "malformed ${...} reference (use ${NAME}, ${env:NAME}, ${NAME:-default} "
                    "or ${file:PATH})",
                )
            )
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
    gateway: tuple[str, str] | None = None
    if isinstance(http, dict):
        topic = http.get("topic", DEFAULT_HTTP_TOPIC)
        namespace = http.get("namespace", DEFAULT_HTTP_NAMESPACE)
        if isinstance(topic, str) and isinstance(namespace, str):
            gateway = (namespace, topic)
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
    formats: dict[str, list[str]] = {}
    if isinstance(raw_ns, dict):
        for ns, spec in raw_ns.items():
            if isinstance(spec, dict):
                formats[str(ns)] = [f for f in FORMAT_FIELDS if spec.get(f) == "registry"]
    problems = cross_check(
        namespaces,
        targets,
        rules,
        http=gateway,
        registry_formats=formats,
        has_registry=isinstance(data.get("schema_registry"), dict),
    )
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
    """One line per (line, path), messages of the same spot joined (union branches).

    By line, except that an unknown key comes before every other error of its mapping.
    """
    by_spot: dict[tuple[int, str], list[str]] = {}
    parts_of: dict[tuple[int, str], tuple[str | int, ...]] = {}
    for loc, msg in found:
        line, parts = _locate(tree, loc)
        spot = (line, _path(parts))
        parts_of[spot] = tuple(parts)
        messages = by_spot.setdefault(spot, [])
        if msg not in messages:
            messages.append(msg)

    def order(spot: tuple[int, str]) -> tuple[int, int, int, str]:
        line, path = spot
        if not any(m.startswith(UNKNOWN_KEY) for m in by_spot[spot]):
            return (line, 1, line, path)
        parent = parts_of[spot][:-1]
        siblings = [s[0] for s, parts in parts_of.items() if parts[: len(parent)] == parent]
        return (min(siblings), 0, line, path)

    return [
        f"{name}:{line} {path}: {'; '.join(by_spot[(line, path)])}"
        for line, path in sorted(by_spot, key=order)
    ]


def _locate(tree: CommentedMap, loc: Loc) -> tuple[int, list[str | int]]:
    """The 1-based line of ``loc`` in the file and its path (parts) as written in the file.

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
    return line, parts


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
