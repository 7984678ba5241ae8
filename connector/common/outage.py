"""An outage of something the connector depends on (the store, Kafka), said in few lines.

A dependency that fails again and again must not fill the log with one traceback per
retry, and an operator must see when it is back. :class:`Outage` tracks one dependency:

* the first failure: one line with the cause (``checkpoint store unavailable: ...``);
* while it lasts: one line every ``every`` seconds, with how long and how many attempts;
* the first success after it: one line saying it is back and how long it was away.

Pure bookkeeping around a logger; the clock is injected for tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Outage", "cause_of"]

REPEAT_EVERY = 30.0  # seconds between two "still unavailable" lines


def cause_of(exc: BaseException) -> str:
    """One line for an exception: its class and its first line (the root cause's too)."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    root = exc.__cause__
    if root is not None and str(root).strip() and str(root).strip() not in line:
        line += f" ({type(root).__name__}: {str(root).strip().splitlines()[0]})"
    return line


class Outage:
    """Whether ``what`` is down, and the log lines that say so (see the module docstring)."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        every: float = REPEAT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._log = logger
        self._every = every
        self._clock = clock
        self._since: float | None = None
        self._last_line = 0.0
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def failures(self) -> int:
        """Failed attempts in the current outage (0 when up)."""
        return self._failures

    def failed(self, exc: BaseException | str, retry_in: float | None = None) -> None:
        """An attempt failed: log the first time, then at most every ``every`` seconds."""
        now = self._clock()
        cause = exc if isinstance(exc, str) else cause_of(exc)
        self._failures += 1
        retry = f"; retrying in {retry_in:.1f}s" if retry_in is not None else "; retrying"
        if self._since is None:
            self._since = self._last_line = now
            self._log.error("%s unavailable: %s%s", self._what, cause, retry)
        elif now - self._last_line >= self._every:
            self._last_line = now
            self._log.error(
                "%s still unavailable after %.0fs (%d failed attempts): %s%s",
                self._what, now - self._since, self._failures, cause, retry,
            )  # fmt: skip

    def ok(self) -> None:
        """An attempt succeeded: if it was down, say it is back."""
        if self._since is None:
            return
        self._log.warning(
            "%s is back after %.1fs (%d failed attempts)",
            self._what, self._clock() - self._since, self._failures,
        )  # fmt: skip
        self._since = None
        self._failures = 0
