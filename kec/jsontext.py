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

Reading: :func:`loads` and :func:`document` take orjson's answer unless it refused the
text or read a number of 2**63 or more in size (an integer past 64 bits, which orjson
reads as a float); then :mod:`json` reads it again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import orjson

_std_dumps = json.JSONEncoder(separators=(",", ":")).encode
_std_dumps_sorted = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
# orjson reads an integer past 64 bits as a float, of at least this size: only such a
# float can stand for an integer that json would keep exact.
_ROUNDED_FROM = 2.0**63


def finite(obj: Any) -> bool:
    """True when no float in ``obj`` (dicts, lists and tuples walked) is NaN or infinite."""
    return not _any_float(obj, _not_finite)


def _not_finite(value: float) -> bool:
    return not math.isfinite(value)


def _any_float(obj: Any, bad: Callable[[float], bool]) -> bool:
    """Whether a float in ``obj`` (dicts, lists and tuples walked) is ``bad``."""
    kind = type(obj)
    if kind is dict:
        values: Iterable[Any] = obj.values()
    elif kind is list or kind is tuple:
        values = obj
    elif kind is float:
        return bad(obj)
    else:
        return False
    # Scalars are looked at here, not in a call each (once per event or action: half
    # the cost of a call per node).
    for value in values:
        kind = type(value)
        if kind is float:
            if bad(value):
                return True
        elif (kind is dict or kind is list or kind is tuple) and _any_float(value, bad):
            return True
    return False


def dumps(obj: Any, *, floats_in: Iterable[Any] | None = None, sort_keys: bool = False) -> str:
    """Compact JSON text, UTF-8 safe (``str.encode()`` never fails on it).

    ``floats_in`` names the parts of ``obj`` that may hold floats (an action's payload,
    say) so only those are checked for NaN and infinities (none: nothing is); ``None``
    checks all of ``obj``.
    ``sort_keys`` sorts every object's keys, as ``json.dumps(sort_keys=True)`` does.
    """
    # dumps_bytes' text, ASCII-only where json wrote it: decoding it cannot fail.
    return dumps_bytes(obj, floats_in=floats_in, sort_keys=sort_keys).decode()


def dumps_bytes(
    obj: Any, *, floats_in: Iterable[Any] | None = None, sort_keys: bool = False
) -> bytes:
    """:func:`dumps`' text as UTF-8 bytes, as orjson writes them (:func:`dumps` decodes
    these): an action's payload, once per action, is not decoded and encoded again.
    Bytes kept beyond the call should be :func:`owned`."""
    std_dumps = _std_dumps_sorted if sort_keys else _std_dumps
    try:
        out = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return std_dumps(obj).encode()
    # No part may hold a float (``floats_in=()``): no scan for a null (about 0.25 us for
    # an action's payload of 170 B without one, more than a third of writing it).
    if floats_in != () and b"null" in out and _suspect(obj, floats_in):
        return std_dumps(obj).encode()
    return out


def owned(out: bytes) -> bytes:
    """orjson's output copied to its own size, for bytes that are kept beyond the call
    that wrote them (cached, or held with many others until a batch is sent).

    orjson (3.12 on) leaves its output in the buffer it wrote into: at least 4 KiB and
    up to 8-16x the text's length (tracemalloc: 4,097 B held for 26 B of text, 32,489 B
    for 4,016 B). 100,000 actions waiting in the outbox would hold 400 MiB for payloads of
    a few hundred bytes, and 2,000 held at once cost 2.0 us an action in allocation
    against 1.0 us copied (the copy itself about 0.2 us). Bytes written and dropped at
    once need no copy."""
    return bytes(memoryview(out))


def _suspect(obj: Any, floats_in: Iterable[Any] | None) -> bool:
    """Whether ``obj``, which orjson wrote with a null, may hold NaN or an infinity (which
    orjson writes as null too). The parts that may hold floats are written once more on
    their own (in C, cheaper than walking them in Python) so that a null elsewhere (a
    None field) does not cost the walk."""
    if floats_in is None:
        return not finite(obj)
    parts = floats_in if isinstance(floats_in, list | tuple) else list(floats_in)
    return bool(parts) and b"null" in orjson.dumps(parts) and not all(map(finite, parts))


DOCUMENT_DEPTH = 64
"""How deep a value may nest to travel as a JSON document in an action (deeper: as text)."""


def document(text: str, max_depth: int = DOCUMENT_DEPTH) -> dict[str, Any] | list[Any] | None:
    """``text`` parsed when it is a JSON object or array (what an action carries as JSON
    rather than as a string); None for any other text: a scalar (``123``, ``"x"``, which
    stay text), not JSON, nesting deeper than ``max_depth``, or holding NaN or infinities
    (not JSON to a receiver). Integers of any size are kept exact."""
    if not _opens_container(text):
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson refuses what json reads (NaN, 1e400): json says whether it is JSON.
        return _from_json(text, max_depth)
    return _accepted(text, doc, max_depth)


def checked_document(
    text: str, max_depth: int = DOCUMENT_DEPTH
) -> dict[str, Any] | list[Any] | None:
    """:func:`check` and then :func:`document` with one parse, for a value declared JSON:
    raise what :func:`check` raises when ``text`` is not JSON, else return what
    :func:`document` returns."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        json.loads(text)  # not JSON: raises ValueError (or RecursionError)
        return document(text, max_depth)  # JSON orjson refuses (NaN, 1e400): rare
    kind = doc.__class__  # parsed: a container is one of these two, without a text scan
    if kind is not dict and kind is not list:
        return None
    return _accepted(text, doc, max_depth)


def _opens_container(text: str) -> bool:
    start = text[:1] if text[:1] not in " \t\r\n" else text.lstrip()[:1]
    return start == "{" or start == "["


def _accepted(text: str, doc: Any, max_depth: int) -> dict[str, Any] | list[Any] | None:
    """:func:`document`'s answer for a container orjson parsed from ``text``."""
    if _too_deep(text, doc, max_depth):
        return None
    if _holds_rounded(doc):  # after the depth check: it recurses
        return _from_json(text, max_depth)  # maybe an integer past 64 bits: json keeps it
    return doc  # type: ignore[no-any-return]


def _from_json(text: str, max_depth: int) -> dict[str, Any] | list[Any] | None:
    """:func:`document` by the standard library's parser."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if _too_deep(text, doc, max_depth) or not finite(doc):  # finite() recurses: after
        return None
    return doc  # type: ignore[no-any-return]


def _too_deep(text: str, doc: Any, max_depth: int) -> bool:
    return text.count("{") + text.count("[") > max_depth and _deeper(doc, max_depth)


def _holds_rounded(obj: Any) -> bool:
    """Whether ``obj`` (as orjson parsed it) holds a float of :data:`_ROUNDED_FROM` or more
    in size: a large float literal, or an integer past 64 bits."""
    return _any_float(obj, _rounded)


def _rounded(value: float) -> bool:
    return not -_ROUNDED_FROM < value < _ROUNDED_FROM


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


def loads(text: str | bytes) -> Any:
    """``json.loads(text)``: the same value, the same types, the same refusal
    (:class:`ValueError`), parsed by orjson whenever the two agree (3-5x faster): orjson's
    answer is taken unless it refused the text (NaN, 1e400, deep nesting, lone
    surrogates, encodings other than UTF-8) or holds a float of 2**63 or more in size (an
    integer past 64 bits, which json keeps exact)."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    if _holds_rounded(doc):
        return json.loads(text)
    return doc


def check(text: str | bytes) -> None:
    """Raise :class:`ValueError` (or :class:`RecursionError`) when ``json.loads`` would."""
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        json.loads(text)
