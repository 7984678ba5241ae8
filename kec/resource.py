"""The life cycle every long-lived part shares: opened before use, closed after.

``with part:`` opens it and closes it however the block ends; ``close()`` is idempotent,
so an owner that also closes it explicitly (the service's stop stack) does no harm.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Resource"]


class Resource:
    """Something with ``open()`` and ``close()``, usable as a context manager."""

    def open(self) -> None:
        """Acquire what the part needs (idempotent); the default needs nothing."""

    def close(self) -> None:
        """Release it (idempotent); the default holds nothing."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
