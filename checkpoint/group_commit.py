"""Group commit: writes that arrive while a transaction is being made durable wait for it
and then go out together, in the next transaction, so they share one fsync.

Leader and followers, no thread of its own for blocking callers: the first caller of
``submit`` to find no transaction in progress becomes the leader and writes every item
queued so far (its own included) with one call of ``write``; callers that arrive meanwhile
queue their item and wait. When the leader is done, every waiter whose item it wrote
returns that item's result (or raises the transaction's exception, which was all of
theirs), and one of those still queued leads the next. Alone, a caller writes at once:
grouping never adds a wait, it only fills the time a transaction already takes.

Callers that must not block use ``submit_later`` (a future) or ``submit_async`` (awaited
on an event loop, :mod:`listeners.durable`): their item is queued the same way. No thread
waits for such an item, so whoever finishes a group with only those left in the queue
hands them to one writer thread, which drains the queue group by group until it is empty
or a blocking caller is there to lead. A thread per waiting step would cap the group at
the thread pool's size (six threads on two cores); one writer puts every step queued
during a transaction into the next, and wakes each event loop once per group.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "future", "item", "result")

    def __init__(self, item: T, future: Future[R] | asyncio.Future[R] | None = None) -> None:
        self.item = item
        self.future = future  # None: a blocking caller waits on the condition
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """``submit(item)`` calls ``write(items)`` for a group of items from concurrent
    callers; ``write`` returns one result per item, in their order, or raises for all.
    ``submit_later(item)`` is the same without blocking, and ``submit_async(item)`` for a
    caller on an event loop; ``close()`` stops the writer thread that they may have
    started."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]]) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._leading = False
        self._writer: ThreadPoolExecutor | None = None  # started for the first non-blocking item
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
        future: Future[R] = Future()
        self._queue_later(_Slot(item, future))
        return future

    async def submit_async(self, item: T) -> R:
        """:meth:`submit_later` awaited on the running loop. The writer wakes each loop
        once per group, not once per item: a wake-up is a write to the loop's pipe."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue_later(_Slot(item, future))
        return await future

    def _queue_later(self, slot: _Slot[T, R]) -> None:
        with self._changed:
            self._queue.append(slot)
            if self._leading:
                return
            self._leading = True
            writer = self._writer_thread()
        self._hand_to(writer)

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
                if not self._writer_leads():
                    return
                group = self._take()
            self._write_group(group)

    def _take(self) -> list[_Slot[T, R]]:
        """The queue as the next group (under the lock), less the items whose callers
        cancelled their future; the others can no longer be cancelled: they are written."""
        group, self._queue = self._queue, []
        return [s for s in group if _still_wanted(s.future)]

    def _writer_leads(self) -> bool:
        """Under the lock, after a group: whether the writer thread leads the next one.
        Only when every queued item is a non-blocking caller's (no thread waits to lead
        them); otherwise nobody leads and a waiting blocking caller takes them all."""
        if self._queue and all(s.future is not None for s in self._queue):
            return True
        self._leading = False
        self._changed.notify_all()
        return False

    def _lead(self, group: list[_Slot[T, R]]) -> None:
        self._write_group(group)
        with self._changed:
            if not self._writer_leads():
                return
            writer = self._writer_thread()
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
        loops: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[R], R | None]]] = {}
        for i, s in enumerate(group):
            future = s.future
            if future is None:
                continue
            if isinstance(future, asyncio.Future):
                loops.setdefault(future.get_loop(), []).append((future, s.result))
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(results[i])
        for loop, answers in loops.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these
                loop.call_soon_threadsafe(_answer, answers, error)


def _still_wanted(future: Future[Any] | asyncio.Future[Any] | None) -> bool:
    """Whether an item goes in the group being taken: not if its caller cancelled it.
    A concurrent future taken can no longer be cancelled; an asyncio one cancelled later
    (its loop's thread decides) finds its item written anyway, which a step allows."""
    if future is None:
        return True
    if isinstance(future, asyncio.Future):
        return not future.cancelled()
    return future.set_running_or_notify_cancel()


def _answer(answers: list[tuple[asyncio.Future[R], R | None]], error: BaseException | None) -> None:
    """On the loop's thread: answer a group's futures there, skipping cancelled ones."""
    for future, result in answers:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]
