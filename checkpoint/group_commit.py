"""Group commit: writes that arrive while a transaction is being made durable wait for it
and then go out together, in the next transaction, so they share one fsync.

Leader and followers, no thread of its own for blocking callers: the first caller of
``submit`` to find no transaction in progress becomes the leader and writes every item
queued so far (its own included) with one call of ``write``; callers that arrive meanwhile
queue their item and wait. When the leader is done, every waiter whose item it wrote
returns that item's result (or raises the transaction's exception, which was all of
theirs), and one of those still queued leads the next. Alone, a caller writes at once:
grouping never adds a wait, it only fills the time a transaction already takes.

Callers that must not block (an event loop's, :mod:`listeners.durable`) use
``submit_later``: their item is queued the same way and a future answers it. No thread
waits for such an item, so whoever finishes a group with only those left in the queue
hands them to one writer thread, which drains the queue group by group until it is empty
or a blocking caller is there to lead. A thread per waiting step would cap the group at
the thread pool's size (six threads on two cores); one writer puts every step queued
during a transaction into the next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "future", "item", "result")

    def __init__(self, item: T, future: Future[R] | None = None) -> None:
        self.item = item
        self.future = future  # None: a blocking caller waits on the condition
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """``submit(item)`` calls ``write(items)`` for a group of items from concurrent
    callers; ``write`` returns one result per item, in their order, or raises for all.
    ``submit_later(item)`` is the same without blocking; ``close()`` stops the writer
    thread that ``submit_later`` may have started."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]]) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._leading = False
        self._writer: ThreadPoolExecutor | None = None  # started by the first submit_later
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
                group = self._take()
        if not slot.done:
            self._lead(group)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def submit_later(self, item: T) -> Future[R]:
        """Queue ``item`` for the next group; the future holds its result or the group's
        exception once the group is durable."""
        slot: _Slot[T, R] = _Slot(item, Future())
        with self._changed:
            self._queue.append(slot)
            if self._leading:
                return slot.future  # type: ignore[return-value]
            self._leading = True
            writer = self._writer_thread()
        self._hand_to(writer)
        return slot.future  # type: ignore[return-value]

    def close(self) -> None:
        """Wait for the writer thread to finish what is queued, then stop it."""
        with self._changed:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)

    def _writer_thread(self) -> ThreadPoolExecutor:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="kec-group-commit")
        return self._writer

    def _drain(self) -> None:
        """The writer thread: lead groups while only non-blocking callers' items wait."""
        while True:
            with self._changed:
                if not self._queue:
                    self._leading = False
                    return
                if any(s.future is None for s in self._queue):
                    self._leading = False  # a blocking caller leads them all
                    self._changed.notify_all()
                    return
                group = self._take()
            self._write_group(group)

    def _take(self) -> list[_Slot[T, R]]:
        """The queue as the next group (under the lock), less the items whose callers
        cancelled their future; the others can no longer be cancelled: they are written."""
        group, self._queue = self._queue, []
        return [s for s in group if s.future is None or s.future.set_running_or_notify_cancel()]

    def _lead(self, group: list[_Slot[T, R]]) -> None:
        self._write_group(group)
        with self._changed:
            if self._queue and all(s.future is not None for s in self._queue):
                writer = self._writer_thread()  # nobody waits to lead these: the writer does
            else:
                self._leading = False
                self._changed.notify_all()
                return
        self._hand_to(writer)

    def _hand_to(self, writer: ThreadPoolExecutor) -> None:
        try:
            writer.submit(self._drain)
        except RuntimeError:  # closed meanwhile: this thread drains what is left
            self._drain()

    def _write_group(self, group: list[_Slot[T, R]]) -> None:
        if not group:
            return
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
            self._changed.notify_all()
        for i, s in enumerate(group):
            if s.future is None:
                continue
            if error is not None:
                s.future.set_exception(error)
            else:
                s.future.set_result(results[i])
