"""How deep a JSON text nests, found without parsing it.

Python's JSON parser recurses once per array or object, so a record of 100,000 nested
``[`` meets the interpreter's recursion limit (a ``RecursionError``, not a decode error),
at a depth that depends on the caller's own stack. Whoever parses JSON from outside (rule
conditions, the HTTP gateway) asks :func:`json_too_deep` first, with a limit of its own.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Final

__all__ = ["json_too_deep"]

# A JSON string, or an unterminated one running to the end. Possessive, and no character
# can stop it but a quote or the end, so a match never fails once started: one pass.
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_too_deep(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays and objects more than ``limit`` deep.

    Linear in the text, with no recursion. Exact for valid JSON; for any other text it is
    at least the depth a JSON parser would reach before it failed.
    """
    if len(text) <= limit or text.count("[") + text.count("{") <= limit:
        return False  # the common case: not enough brackets to be that deep
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > limit
