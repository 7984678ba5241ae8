"""The ``python`` target: call a function of your own with each action.

``function`` names it as ``module:attribute`` (``myapp.hooks:on_action``; the attribute
may be dotted, ``myapp.hooks:Handler.handle``) and is resolved in :meth:`PythonTarget.open`,
so a typo stops the connector at start-up with a :class:`~kec.errors.ConfigError`.
Library users may pass the callable itself.

The function receives the :class:`~kec.action.Action`; its idempotency key is
``action.action_id``. Returning (any value) means delivered. Raising
:class:`~kec.errors.TargetRejected` dead-letters the action, raising
:class:`~kec.errors.TargetError` retries it, and any other exception is wrapped in a
retriable ``TargetError`` with the original as its cause. An ``async def`` function is run
to completion on a fresh event loop in the dispatcher's thread.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from connector.targets.base import Target
from kec.action import Action
from kec.errors import ConfigError, TargetError

ActionHandler = Callable[[Action], Any]


def resolve_function(spec: str) -> ActionHandler:
    """Import ``module:attribute`` and return it; ConfigError if absent or not callable."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"function {spec!r}: expected 'module:function'")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ConfigError(
            f"function {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError as exc:
            raise ConfigError(f"function {spec!r}: no attribute {part!r}") from exc
    if not callable(found):
        raise ConfigError(f"function {spec!r}: {type(found).__name__} is not callable")
    handler: ActionHandler = found
    return handler


class PythonTarget(Target):
    """Calls ``function(action)`` for each action."""

    def __init__(self, name: str = "python", function: str | ActionHandler = "") -> None:
        if isinstance(function, str) and not function:
            raise ConfigError(f"python target {name!r}: function is required")
        self.name = name
        self._spec = function
        self._function: ActionHandler | None = None

    def open(self) -> None:
        if self._function is not None:
            return
        spec = self._spec
        if isinstance(spec, str):
            try:
                self._function = resolve_function(spec)
            except ConfigError as exc:
                raise ConfigError(f"python target {self.name!r}: {exc}") from exc
        else:
            self._function = spec

    def close(self) -> None:
        self._function = None

    def deliver(self, action: Action) -> None:
        function = self._function
        if function is None:
            raise TargetError(f"python target {self.name} is not open")
        try:
            result = function(action)
            if inspect.isawaitable(result):
                asyncio.run(_awaited(result))
        except TargetError:
            raise  # the function's own verdict, TargetRejected included
        except Exception as exc:
            raise TargetError(
                f"python target {self.name}: {_describe(function)} raised"
                f" {type(exc).__name__}: {exc} (action {action.action_id})"
            ) from exc


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _describe(function: ActionHandler) -> str:
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}:{qualname}" if module else qualname
