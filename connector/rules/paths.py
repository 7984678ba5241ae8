"""Dotted paths into an event's value parsed as JSON: rule conditions, correlation values
and the groups of time-driven rules walk them alike. Pure.

A path is dotted (``order.items.0.sku``); a segment of digits also indexes a list; keys
containing dots cannot be addressed. A path that leads nowhere gives :data:`MISSING`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MISSING", "Path", "compile_path", "resolve"]

Path = tuple[tuple[str, int | None], ...]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()
"""What a path that leads nowhere resolves to (``None`` is JSON's null)."""


def compile_path(text: str) -> Path:
    """``text`` split once into (key, list index or None) segments."""
    return tuple(
        (seg, int(seg) if seg.isascii() and seg.isdigit() else None) for seg in text.split(".")
    )


def resolve(doc: object, path: Path) -> object:
    """The value at ``path`` in ``doc``, or :data:`MISSING`."""
    current = doc
    for name, index in path:
        if isinstance(current, dict):
            current = current.get(name, MISSING)
            if current is MISSING:
                return MISSING
        elif isinstance(current, list) and index is not None and index < len(current):
            current = current[index]
        else:
            return MISSING
    return current
