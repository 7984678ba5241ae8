"""Services stopped in reverse order of starting, each stop guarded.

:class:`Services` is a stack of ``(name, stop)`` pairs, pushed as each service starts.
Closing it stops them last-started first, like :class:`contextlib.ExitStack`, except that
a stop that raises does not skip the rest: the failure is logged with the service's name
and the next service is stopped all the same. The failures are reported once, at the end,
as one :class:`ShutdownError` naming them, unless an exception is already ending the run:
that one propagates (the failed stops are in the log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from types import TracebackType

from kec.errors import ConnectorError

__all__ = ["Services", "ShutdownError"]

log = logging.getLogger(__name__)


class ShutdownError(ConnectorError):
    """Some services failed to stop (each was logged with its error); ``failed`` names
    them in the order they were stopped. The others were stopped."""

    def __init__(self, failed: Sequence[str]) -> None:
        self.failed = tuple(failed)
        super().__init__(f"stopping {', '.join(self.failed)} failed (see the log)")


class Services:
    """Started services, stopped in reverse order; see the module docstring.

    Not thread-safe: the thread that starts the services stops them.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._stack: list[tuple[str, Callable[[], object]]] = []

    @property
    def names(self) -> tuple[str, ...]:
        """The services not stopped yet, in the order they started."""
        return tuple(name for name, _ in self._stack)

    def push(self, name: str, stop: Callable[[], object]) -> None:
        """Register a service that has started; ``stop`` is called once, by :meth:`close`."""
        self._stack.append((name, stop))

    def close(self) -> None:
        """Stop every service, last started first; :class:`ShutdownError` if any failed."""
        failed = self._stop_all()
        if failed:
            raise ShutdownError(failed)

    def _stop_all(self) -> list[str]:
        failed: list[str] = []
        while self._stack:
            name, stop = self._stack.pop()
            try:
                stop()
            except Exception:
                # Logged here, with its traceback: ShutdownError carries only the names.
                self._log.exception("stopping %s failed; stopping the others", name)
                failed.append(name)
            else:
                self._log.debug("stopped %s", name)
        return failed

    def __enter__(self) -> Services:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._stop_all()  # the run's own error propagates; failed stops are logged
            return
        self.close()
