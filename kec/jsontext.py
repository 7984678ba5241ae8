"""JSON on the hot path: orjson's speed with the standard library's answers.

The per-event work writes JSON three times (the batch record's events and actions, a
``log`` target's line) and checks declared JSON values once; orjson does each 5-15x
faster than :mod:`json`. Where the two differ, :mod:`json` decides, so what is written
reads back (with ``json.loads``) as the value given, and what is accepted is what
``json.loads`` accepts:

* writing: orjson refuses lone surrogates and integers past 64 bits and writes NaN and
  +-Infinity as ``null``, so text with a ``null`` in it has the parts of the value that
  may hold floats checked (a value without one had no NaN: the common case costs no
  walk); those values are written by :mod:`json`, ASCII-only so that a lone surrogate is
  an escape, not a character no UTF-8 encoder takes;
* checking: a value orjson refuses (NaN, huge exponents, very deep nesting, lone
  surrogates) is checked again by :mod:`json`, which has the last word.

Reading stays with :mod:`json`: orjson reads integers past 64 bits as floats, and reads
are off the hot path (a restart, an assignment, a replay).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

import orjson

_std_dumps = json.JSONEncoder(separators=(",", ":")).encode
_LONG_NUMBER = re.compile(r"[0-9]{19}")


def finite(obj: Any) -> bool:
    """True when no float in ``obj`` (dicts, lists and tuples walked) is NaN or infinite."""
    kind = type(obj)
    if kind is float:
        return math.isfinite(obj)
    if kind is dict:
        return all(map(finite, obj.values()))
    if kind is list or kind is tuple:
        return all(map(finite, obj))
    return True


def dumps(obj: Any, *, floats_in: Iterable[Any] | None = None) -> str:
    """Compact JSON text, UTF-8 safe (``str.encode()`` never fails on it).

    ``floats_in`` names the parts of ``obj`` that may hold floats (an action's payload,
    say) so only those are checked for NaN and infinities; ``None`` checks all of ``obj``.
    """
    try:
        out = orjson.dumps(obj)
    except orjson.JSONEncodeError:  # a lone surrogate or an integer past 64 bits
        return _std_dumps(obj)
    # orjson wrote any NaN or infinity as null: only then can one be there.
    if b"null" in out and not (
        all(map(finite, floats_in)) if floats_in is not None else finite(obj)
    ):
        return _std_dumps(obj)
    return out.decode()


DOCUMENT_DEPTH = 64
"""How deep a value may nest to travel as a JSON document in an action (deeper: as text)."""


def document(text: str, max_depth: int = DOCUMENT_DEPTH) -> dict[str, Any] | list[Any] | None:
    """``text`` parsed when it is a JSON object or array (what an action carries as JSON
    rather than as a string); None for any other text: a scalar (``123``, ``"x"``, which
    stay text), not JSON, nesting deeper than ``max_depth``, or holding NaN or infinities
    (not JSON to a receiver). Integers of any size are kept exact."""
    start = text[:1] if text[:1] not in " \t\r\n" else text.lstrip()[:1]
    if start != "{" and start != "[":
        return None
    try:
        # orjson would read an integer past 64 bits as a float: json keeps it exact.
        doc_from_json = _LONG_NUMBER.search(text) is not None
        doc = json.loads(text) if doc_from_json else orjson.loads(text)
    except (ValueError, RecursionError):  # orjson's JSONDecodeError is a ValueError
        return None
    if text.count("{") + text.count("[") > max_depth and _deeper(doc, max_depth):
        return None
    # orjson reads no NaN or infinity (it refuses them, and 1e400); json reads them.
    if doc_from_json and not finite(doc):  # after the depth check: finite() recurses
        return None
    return doc  # type: ignore[no-any-return]


def _deeper(doc: Any, limit: int) -> bool:
    """Whether ``doc`` nests lists and dicts more than ``limit`` deep (no recursion)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def check(text: str | bytes) -> None:
    """Raise :class:`ValueError` (or :class:`RecursionError`) when ``json.loads`` would."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        json.loads(text)
