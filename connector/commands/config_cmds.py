"""``event-connector validate`` and ``schema``: check a config file, print its JSON Schema.

Neither connects to anything. ``validate`` goes as far as the connector goes at start-up
before its first I/O: it loads the file, compiles the rules and builds (without opening)
every target, so what any of them refuses is reported here, each error with its line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kec.errors import ConfigError, ConfigFileError

if TYPE_CHECKING:
    from connector.config import ConnectorConfig

_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"  # what pydantic emits


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _line_of(tree: Any, loc: tuple[str | int, ...]) -> int:
    """The 1-based line of the deepest part of ``loc`` found in the ruamel tree."""
    line = 1
    node = tree
    for part in loc:
        try:
            where = node.lc.item(part) if isinstance(part, int) else node.lc.key(part)
            line = where[0] + 1
            node = node[part]
        except (AttributeError, IndexError, KeyError, TypeError):
            break  # not written in the file (the built-in `log` target, a merged key)
    return line


def _check_runtime(path: str, cfg: ConnectorConfig) -> None:
    """Compile the rules and build each target (no I/O), as the connector does at start.

    Raises :class:`ConfigFileError` listing every refusal as ``FILE:LINE PATH: message``.
    """
    from ruamel.yaml import YAML

    from connector.rules.trigger import TriggerEngine
    from connector.targets.registry import build_target

    problems: list[tuple[tuple[str | int, ...], str, str]] = []
    try:
        TriggerEngine(cfg.rules, limits=cfg.pipeline.match_limits())
    except ConfigError as exc:
        problems.append((("rules",), "rules", str(exc)))
    for name, spec in cfg.targets.items():
        try:
            build_target(name, spec, connection=cfg.kafka.connection())
        except ConfigError as exc:
            where = f".{name}" if name.isidentifier() else f'["{name}"]'
            problems.append((("targets", name), f"targets{where}", str(exc)))
    if problems:
        # load_config() parsed this file already, so parsing it again for lines succeeds.
        tree = YAML(typ="rt").load(Path(path).read_text(encoding="utf-8"))
        raise ConfigFileError(
            path, [f"{path}:{_line_of(tree, loc)} {shown}: {msg}" for loc, shown, msg in problems]
        )


@click.command()
@click.option(
    "-c",
    "--config",
    "path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    metavar="FILE",
    help="The connector config file (YAML) to check.",
)
def validate(path: str) -> None:
    """Check a config file without connecting to anything.

    Reads FILE (${VAR} taken from the environment), validates every section, compiles
    the rules and builds each target without opening it. Prints one line "FILE: ok (...)"
    and exits 0; otherwise prints every error as "FILE:LINE PATH: message" on stderr and
    exits 2. The targets counted include the built-in log target.
    """
    from connector.config import load_config

    try:
        cfg = load_config(path)
        _check_runtime(path, cfg)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    counts = (
        _plural(len(set(cfg.topics().values())), "namespace"),  # http: declares one too
        _plural(len(cfg.topics()), "topic"),
        _plural(len(cfg.rules), "rule"),
        _plural(len(cfg.targets), "target"),
    )
    click.echo(f"{path}: ok ({', '.join(counts)})")


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write the schema to FILE instead of stdout.",
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of the config file, for completion and checks in an editor.

    Save it and name it on the first line of a config file for the YAML language server
    (VS Code's YAML extension, and editors using yaml-language-server):

    \b
        event-connector schema --output connector.schema.json
        # yaml-language-server: $schema=./connector.schema.json

    The editor sees ${VAR} as a string, so it may flag a number or boolean written that
    way; the connector accepts it once the variable is substituted.
    """
    from connector.config import ConnectorConfig

    # The validation schema: what a file may contain (aliases, defaults, input types).
    document = {"$schema": _SCHEMA_DIALECT, **ConnectorConfig.model_json_schema(mode="validation")}
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote the config schema to {output}", err=True)


@click.command()
@click.option(
    "-c",
    "--config",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Connector config file (YAML).",
)
@click.argument("key")
@click.argument("value", required=False, default="")
@click.option("--context", default=None, help="The event's context (workflow execution).")
@click.option(
    "--namespace",
    default=None,
    help="The event's namespace (default: the file's only namespace, else 'default').",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule.")
def explain(
    path: Path, key: str, value: str, context: str | None, namespace: str | None, as_json: bool
) -> None:
    """Say which rules an event would fire, and why each other rule would not.

    Nothing is sent and nothing is connected to: the event (KEY, VALUE as text, --context,
    --namespace) goes through the file's rules as `run` would evaluate it. Per rule:
    `fires`, `waits` (an all_of rule takes the event into its set and needs its other
    keys) or `no`, with the first condition that fails (namespace, key, context, each value
    condition).

    \b
        event-connector explain -c connector.yaml order-created '{"total": 12}'
        event-connector explain -c connector.yaml key "done" --context exec-1 --json
    """
    from connector.config import load_config
    from connector.rules.explain import FIRES, explain
    from kec.event import Event

    cfg = load_config(path)
    namespaces = sorted({*cfg.namespaces, *([cfg.http.namespace] if cfg.http else [])})
    if namespace is None:
        namespace = namespaces[0] if len(namespaces) == 1 else "default"
    if namespace not in namespaces:
        raise click.BadParameter(
            f"{namespace!r} is not a namespace of {path} ({', '.join(namespaces)})",
            param_hint="--namespace",
        )
    event = Event(key=key, value=value, namespace=namespace, context=context)
    verdicts = explain(cfg.rules, event, cfg.pipeline.match_limits())
    if as_json:
        for verdict in verdicts:
            click.echo(json.dumps(verdict.to_dict()))
        return
    if not verdicts:
        click.echo(f"{path} has no rules")
        return
    width = max(len(v.rule) for v in verdicts)
    for v in verdicts:
        click.echo(f"{v.rule:<{width}}  {v.verdict:<5}  {v.reason}")
        if v.verdict == FIRES:
            click.echo(f"{'':<{width}}         -> {v.action}")
    fired = sum(v.verdict == FIRES for v in verdicts)
    click.echo(
        f"{_plural(fired, 'action')} for key {key!r} in namespace {namespace!r}"
        + (f", context {context!r}" if context else ", no context")
    )
