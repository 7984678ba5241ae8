"""``TimerListener``: Ray's timer event, one that happens at a timestamp (docs/architecture.md).

``await TimerListener().poll_for_event(timestamp)`` returns once the clock reaches
``timestamp`` (seconds since the epoch, as :func:`time.time`); a timestamp that is already
past fires at once. The event it returns::

    Event(key="timer", value="<timestamp as JSON>", event_type="timer",
          event_id="timer/<timestamp>", create_time=<the clock's now, in ms>)

so ``event.json_value()`` gives the timestamp back. The id is derived from the timestamp:
polling the same timer twice yields the same event. Nothing needs acknowledging, so
``event_checkpointed`` is the base class's no-op.

The time source is a :class:`Clock`, chosen per process (the listener's constructor takes
no arguments): the default :class:`SystemClock` reads :func:`time.time` and sleeps on the
event loop; :func:`set_clock` swaps it, e.g. for a :class:`ManualClock` that a test or a
simulation advances by hand, so no real time passes.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any, Protocol

from kec.event import Event
from listeners.base import EventListener

__all__ = [
    "TIMER_EVENT_TYPE",
    "TIMER_KEY",
    "Clock",
    "ManualClock",
    "SystemClock",
    "TimerListener",
    "get_clock",
    "set_clock",
]

TIMER_KEY = "timer"
TIMER_EVENT_TYPE = "timer"
# The wall clock may be stepped (NTP) while we sleep: re-read it at least this often.
MAX_NAP = 1.0


class Clock(Protocol):
    """A source of wall-clock time that can be waited on."""

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep_until(self, timestamp: float) -> None:
        """Return once :meth:`now` has reached ``timestamp`` (at once if it has)."""
        ...


class SystemClock:
    """Real time: :func:`time.time`, waited for with :func:`asyncio.sleep`."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, timestamp: float) -> None:
        # asyncio sleeps on the monotonic clock; re-check the wall clock in short naps so
        # a clock step does not make the timer fire far too late.
        while True:
            left = timestamp - time.time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, MAX_NAP))


class ManualClock:
    """A clock that only moves when told to (tests, simulations).

    :meth:`advance` and :meth:`set` wake the sleepers whose time has come; call them from
    the event loop the sleepers run on. :attr:`sleepers` says how many are waiting, so a
    caller can wait for a timer to be armed before moving the clock.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    @property
    def sleepers(self) -> int:
        return len(self._sleepers)

    async def sleep_until(self, timestamp: float) -> None:
        if timestamp <= self._now:
            return
        entry = (timestamp, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            if entry in self._sleepers:  # cancelled before it was woken
                self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (not backwards)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go backwards (advance by {seconds})")
        self.set(self._now + seconds)

    def set(self, timestamp: float) -> None:
        """Move the clock to ``timestamp`` (not backwards)."""
        if timestamp < self._now:
            raise ValueError(f"a clock does not go backwards ({self._now} -> {timestamp})")
        self._now = float(timestamp)
        due = [entry for entry in self._sleepers if entry[0] <= self._now]
        for entry in due:
            self._sleepers.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)


_clock: Clock = SystemClock()


def get_clock() -> Clock:
    """The clock timer listeners of this process use now."""
    return _clock


def set_clock(clock: Clock) -> Clock:
    """Make ``clock`` the time source of this process's timer listeners; return the old one.

    Polls already sleeping keep the clock they started with.
    """
    global _clock
    previous, _clock = _clock, clock
    return previous


def _checked_timestamp(timestamp: Any) -> float:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise TypeError(
            f"timestamp must be seconds since the epoch (int or float), "
            f"not {type(timestamp).__name__}"
        )
    value = float(timestamp)
    if not math.isfinite(value):
        raise ValueError(f"timestamp must be finite, not {timestamp!r}")
    return value


class TimerListener(EventListener):
    """Fires at a timestamp; see the module docstring for the event and the clock."""

    async def poll_for_event(self, timestamp: float) -> Event:
        """Return the timer event once the clock reaches ``timestamp`` (seconds since the epoch).

        Raises :class:`TypeError` for a timestamp that is not a number and
        :class:`ValueError` for NaN or an infinity.
        """
        at = _checked_timestamp(timestamp)
        clock = _clock
        if at > clock.now():
            await clock.sleep_until(at)
        return Event(
            key=TIMER_KEY,
            value=json.dumps(at),
            event_type=TIMER_EVENT_TYPE,
            create_time=max(1, int(clock.now() * 1000)),
            event_id=f"timer/{at!r}",
        )
