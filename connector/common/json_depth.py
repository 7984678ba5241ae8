"""How deep a JSON text nests, found without parsing it.

Python's JSON parser recurses once per array or object, so a record of 100,000 nested
``[`` meets the interpreter's recursion limit (a ``RecursionError``, not a decode error),
at a depth that depends on the caller's own stack. Whoever parses JSON from outside (rule
conditions, the HTTP gateway) asks :func:`json_too_deep` first, with a limit of its own.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final

__all__ = ["json_too_deep"]

# A JSON string, or an unterminated one running to the end. Possessive, and no character
# can stop it but a quote or the end, so a match never fails once started: one pass.
_JSON_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
# Outside strings, keep only the brackets, as signed steps: opening +1, closing -1.
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_CHUNK: Final = 4096  # steps summed at a time: nesting that is too deep ends the scan


def json_too_deep(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays and objects more than ``limit`` deep.

    Exact for valid JSON; for any other text it is at least the depth a JSON parser would
    reach before it failed. Linear in the text, with no recursion and no Python loop per
    character: the brackets outside strings become +1/-1 steps whose running sum, taken
    a chunk at a time, stops at the first chunk that goes deeper than ``limit``.
    """
    if len(text) <= limit or text.count("[") + text.count("{") <= limit:
        return False  # the common case: not enough brackets to be that deep
    outside = _JSON_STRING.sub("", text).encode(errors="surrogatepass")
    signed = outside.translate(_STEPS, _NOT_BRACKETS)
    if b"\x01" * (limit + 1) in signed:
        return True  # a run of openers alone goes too deep: the usual hostile record
    steps = array("b", signed)
    depth = 0
    for start in range(0, len(steps), _CHUNK):
        chunk = steps[start : start + _CHUNK]
        if max(accumulate(chunk, initial=depth)) > limit:
            return True
        depth += sum(chunk)
    return False
