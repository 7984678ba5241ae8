"""Regular expressions that run in linear time, whatever the pattern and the text.

Rule conditions match event values that anyone with write access to a topic controls, so a
backtracking engine (Python's ``re``) would let one record hang the pipeline: ``^(a+)+$``
takes about a second on 24 characters and doubles with each one more. These patterns run on
RE2 (through the ``pyre2`` binding), which compiles a pattern to an automaton and matches
in time linear in the text, for every pattern.

The syntax is Python's, less what needs backtracking: lookahead and lookbehind,
backreferences, conditionals, atomic groups and possessive quantifiers; and a counted
repetition may not exceed 1000 (``a{1001}``). A pattern that uses them is refused when the
config is loaded, not matched with another engine. ``\\d``, ``\\w`` and ``\\s`` are Unicode
classes, as in ``re``; two differences remain: ``$`` matches only at the very end (``re``
also before a final newline) and ``\\b`` is a word boundary for ASCII words only.
"""

from __future__ import annotations

import re
from typing import Any, Final

import re2  # pyre2: no type stubs, so this module is its only user

__all__ = ["LinearRegex"]

_SURROGATE: Final = re.compile("[\ud800-\udfff]")

_UNSUPPORTED: Final = (
    "RE2 (linear-time matching) has no lookaround, backreferences, conditionals, atomic "
    "groups or possessive quantifiers, and no counted repetition over 1000"
)


class LinearRegex:
    """A compiled pattern; :meth:`search` says whether it matches anywhere in a text.

    Raises ``ValueError`` for a pattern that is invalid or needs a backtracking engine.
    Immutable; one instance may serve several threads (RE2 matching is thread-safe).
    """

    __slots__ = ("_contains", "pattern")

    def __init__(self, pattern: str) -> None:
        try:
            re.compile(pattern)  # only for its error messages, which give the position
            compiled: Any = re2.compile(pattern)
        except (re.error, re2.error) as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        if not isinstance(compiled, re2.Pattern):
            # pyre2 quietly falls back to `re` for what RE2 lacks: exactly what must not run.
            raise ValueError(f"regular expression {pattern!r} is not supported: {_UNSUPPORTED}")
        self.pattern = pattern
        self._contains = compiled.contains  # a bool, with no match object to build

    def search(self, text: str) -> bool:
        """Whether the pattern matches somewhere in ``text``."""
        try:
            return bool(self._contains(text))
        except UnicodeEncodeError:
            # RE2 matches UTF-8; a lone surrogate (only a Python caller can build one) is
            # matched as U+FFFD, as undecodable bytes are in Event.text.
            return bool(self._contains(_SURROGATE.sub("\ufffd", text)))

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"
