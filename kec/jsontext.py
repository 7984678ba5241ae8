"""JSON on the hot path: orjson's speed with the standard library's answers.

The per-event work writes JSON three times (the batch record's events and actions, a
``log`` target's line) and checks declared JSON values once; orjson does each 5-15x
faster than :mod:`json`. Where the two differ, :mod:`json` decides, so what is written
reads back (with ``json.loads``) as the value given, and what is accepted is what
``json.loads`` accepts:

* writing: orjson refuses lone surrogates and integers past 64 bits and would write NaN
  and +-Infinity as ``null`` (so the parts that may hold floats are checked first); those
  values are written by :mod:`json`, ASCII-only so that a lone surrogate is an escape,
  not a character no UTF-8 encoder takes;
* checking: a value orjson refuses (NaN, huge exponents, very deep nesting, lone
  surrogates) is checked again by :mod:`json`, which has the last word.

Reading stays with :mod:`json`: orjson reads integers past 64 bits as floats, and reads
are off the hot path (a restart, an assignment, a replay).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import orjson

_std_dumps = json.JSONEncoder(separators=(",", ":")).encode


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
    if all(map(finite, floats_in)) if floats_in is not None else finite(obj):
        try:
            return orjson.dumps(obj).decode()
        except orjson.JSONEncodeError:
            pass  # a lone surrogate or an integer past 64 bits
    return _std_dumps(obj)


def check(text: str | bytes) -> None:
    """Raise :class:`ValueError` (or :class:`RecursionError`) when ``json.loads`` would."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        json.loads(text)
