"""Commands other packages add to ``event-connector``, through Python entry points.

A distribution registers a click command under the entry point group
:data:`ENTRY_POINT_GROUP` (``[project.entry-points."kafka_event_connector.commands"]`` in
its pyproject.toml, ``name = "module:command"``). This project's checkout registers
``dev-broker`` and ``demo`` that way, from its development tooling, which the product
does not import.

A plugin's module is imported only when its command runs or ``--help`` lists the
commands, so ``event-connector run`` never imports one. A plugin that is not installed,
fails to import or is not a click command is left out with a DEBUG log line (never a
traceback); asked for by name, it is a usage error that says why. A plugin cannot replace a
built-in command.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

import click

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kafka_event_connector.commands"


def registered() -> dict[str, EntryPoint]:
    """The installed plugins' entry points by command name (the first of a name wins)."""
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry)
    return found


def load(entry: EntryPoint) -> click.Command | str:
    """The plugin's command, or why it cannot be had (logged at DEBUG)."""
    try:
        command = entry.load()
    except Exception as exc:  # a plugin's import may fail in any way: it is left out
        reason = f"{type(exc).__name__}: {exc}"
    else:
        if isinstance(command, click.Command):
            return command
        reason = f"{entry.value} is not a click command"
    log.debug("command %r (%s) left out: %s", entry.name, entry.value, reason)
    return reason


class PluginGroup(click.Group):
    """A click group whose commands are its own plus the installed plugins'."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *registered()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry = registered().get(cmd_name)
        if entry is None:
            return None
        loaded = load(entry)
        return loaded if isinstance(loaded, click.Command) else None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = click.utils.make_str(args[0]) if args else None
        if name is not None and super().get_command(ctx, name) is None:
            entry = registered().get(name)
            if entry is not None:
                loaded = load(entry)
                if isinstance(loaded, str):
                    ctx.fail(f"command {name!r} is installed but does not load: {loaded}")
        return super().resolve_command(ctx, args)
