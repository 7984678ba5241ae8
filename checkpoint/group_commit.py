"""Group commit: writes that arrive while a transaction is being made durable wait for it
and then go out together, in the next transaction, so they share one fsync.

Leader and followers, no thread of its own: the first caller to find no transaction in
progress becomes the leader and writes every item queued so far (its own included) with
one call of ``write``; callers that arrive meanwhile queue their item and wait. When the
leader is done, every waiter whose item it wrote returns that item's result (or raises the
transaction's exception, which was all of theirs), and one of those still queued leads
the next. Alone, a caller writes at once: grouping never adds a wait, it only fills the
time a transaction already takes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """``submit(item)`` calls ``write(items)`` for a group of items from concurrent
    callers; ``write`` returns one result per item, in their order, or raises for all."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]]) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._leading = False
        self.transactions = 0  # groups written (for tests and metrics)
        self.items = 0

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._changed:
            self._queue.append(slot)
            while self._leading and not slot.done:
                self._changed.wait()
            if not slot.done:
                self._leading = True
                group, self._queue = self._queue, []
        if not slot.done:
            self._lead(group)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _lead(self, group: list[_Slot[T, R]]) -> None:
        error: BaseException | None = None
        results: Sequence[R] = ()
        try:
            results = self._write([s.item for s in group])
            if len(results) != len(group):
                raise RuntimeError(f"group commit: {len(results)} results for {len(group)} items")
        except BaseException as exc:  # every item of the group shares the transaction's fate
            error = exc
        with self._changed:
            for i, s in enumerate(group):
                s.error = error
                s.result = results[i] if error is None else None
                s.done = True
            self.transactions += 1
            self.items += len(group)
            self._leading = False
            self._changed.notify_all()
