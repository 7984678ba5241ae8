"""Group commit (checkpoint.group_commit): one write for the callers that queued while
another write was in progress; each caller gets its own result or the group's error."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence

import pytest

from checkpoint.group_commit import GroupCommit
from tests.support import wait_for

pytestmark = pytest.mark.unit


class Writer:
    """Records each group; the first write waits until released."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_on: set[int] = set()

    def __call__(self, items: Sequence[int]) -> list[str]:
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.entered.set()
            self.release.wait(10)
        if self.fail_on & set(items):
            raise OSError("disk full")
        return [f"r{i}" for i in items]


def _during_the_first_write(
    commit: GroupCommit[int, str], writer: Writer, submit: Callable[[int], None],
    items: Iterable[int],
) -> None:  # fmt: skip
    """``submit(0)`` in a thread; while its write is held, ``submit`` each of ``items`` in
    a thread of its own; release the write once they are all queued; join them all."""
    first = threading.Thread(target=submit, args=(0,))
    first.start()
    assert writer.entered.wait(10)
    others = [threading.Thread(target=submit, args=(i,)) for i in items]
    for t in others:
        t.start()
    wait_for(lambda: len(commit._queue) == len(others), timeout=10, what="the callers queued")
    writer.release.set()
    for t in [first, *others]:
        t.join(10)


def test_a_lone_caller_writes_at_once() -> None:
    writer = Writer()
    writer.release.set()
    commit = GroupCommit(writer)
    assert commit.submit(1) == "r1"
    assert commit.submit(2) == "r2"
    assert writer.groups == [[1], [2]]
    assert (commit.transactions, commit.items) == (2, 2)


def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    writer = Writer()
    commit = GroupCommit(writer)
    results: dict[int, str] = {}

    def submit(i: int) -> None:
        results[i] = commit.submit(i)

    _during_the_first_write(commit, writer, submit, range(1, 11))
    assert results == {i: f"r{i}" for i in range(11)}
    assert writer.groups[0] == [0]
    assert sorted(writer.groups[1]) == list(range(1, 11)), "one write for the ten"
    assert commit.transactions == 2


def test_a_failed_write_fails_its_group_only() -> None:
    writer = Writer()
    writer.fail_on = {3}
    commit = GroupCommit(writer)
    errors: dict[int, BaseException] = {}
    results: dict[int, str] = {}

    def submit(i: int) -> None:
        try:
            results[i] = commit.submit(i)
        except OSError as exc:
            errors[i] = exc

    _during_the_first_write(commit, writer, submit, (2, 3))
    assert results == {0: "r0"}
    assert set(errors) == {2, 3} and "disk full" in str(errors[2])
    assert commit.submit(4) == "r4", "the next group is written as usual"


def test_a_write_that_returns_the_wrong_number_of_results_is_an_error() -> None:
    commit: GroupCommit[int, str] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        commit.submit(1)


# -- submit_later: callers that must not block ---------------------------------------------


def test_submit_later_alone_is_written_by_the_writer_thread() -> None:
    threads: list[str] = []

    def write(items: Sequence[int]) -> list[str]:
        threads.append(threading.current_thread().name)
        return [f"r{i}" for i in items]

    commit = GroupCommit(write)
    try:
        assert commit.submit_later(1).result(10) == "r1"
        assert threads and threads[0].startswith("kec-group-commit")
    finally:
        commit.close()


def test_items_queued_later_during_a_blocking_write_share_the_next_group() -> None:
    writer = Writer()
    commit = GroupCommit(writer)
    try:
        first = threading.Thread(target=commit.submit, args=(0,))
        first.start()
        assert writer.entered.wait(10)
        futures = [commit.submit_later(i) for i in range(1, 21)]
        assert not any(f.done() for f in futures), "nothing is durable before its group"
        writer.release.set()
        assert [f.result(10) for f in futures] == [f"r{i}" for i in range(1, 21)]
        first.join(10)
        assert writer.groups == [[0], list(range(1, 21))], "no thread per item: one group"
    finally:
        commit.close()


def test_a_blocking_caller_queued_behind_the_writer_is_answered() -> None:
    writer = Writer()
    commit = GroupCommit(writer)
    results: dict[int, str] = {}
    try:
        held = commit.submit_later(0)
        assert writer.entered.wait(10)
        later = commit.submit_later(1)
        blocking = threading.Thread(target=lambda: results.update({2: commit.submit(2)}))
        blocking.start()
        wait_for(lambda: len(commit._queue) == 2, timeout=10, what="both queued")
        writer.release.set()
        blocking.join(10)
        assert not blocking.is_alive()
        assert (held.result(10), later.result(10), results) == ("r0", "r1", {2: "r2"})
        assert writer.groups == [[0], [1, 2]]
    finally:
        commit.close()


def test_a_failed_group_fails_its_futures_and_the_next_is_written() -> None:
    writer = Writer()
    writer.fail_on = {3}
    commit = GroupCommit(writer)
    try:
        first = commit.submit_later(0)
        assert writer.entered.wait(10)
        failing = [commit.submit_later(i) for i in (2, 3)]
        writer.release.set()
        assert first.result(10) == "r0"
        for f in failing:
            with pytest.raises(OSError, match="disk full"):
                f.result(10)
        assert commit.submit_later(4).result(10) == "r4"
    finally:
        commit.close()


def test_close_writes_what_is_queued_first() -> None:
    writer = Writer()
    commit = GroupCommit(writer)
    held = commit.submit_later(0)
    assert writer.entered.wait(10)
    queued = commit.submit_later(1)
    closing = threading.Thread(target=commit.close)
    closing.start()
    writer.release.set()
    closing.join(10)
    assert not closing.is_alive()
    assert (held.result(0), queued.result(0)) == ("r0", "r1")


def test_an_item_cancelled_before_its_group_is_not_written_and_the_rest_are() -> None:
    writer = Writer()
    commit = GroupCommit(writer)
    try:
        held = commit.submit_later(0)
        assert writer.entered.wait(10)
        cancelled, kept = commit.submit_later(1), commit.submit_later(2)
        assert cancelled.cancel()
        writer.release.set()
        assert (held.result(10), kept.result(10)) == ("r0", "r2")
        assert writer.groups == [[0], [2]]
        assert not held.cancel(), "an item in a group is written: too late to cancel"
    finally:
        commit.close()


# -- submit_async: callers on an event loop ------------------------------------------------


def test_submit_async_answers_a_group_on_its_loop_and_skips_a_cancelled_item() -> None:
    writer = Writer()
    commit = GroupCommit(writer)

    async def main() -> tuple[list[str], bool]:
        first = asyncio.ensure_future(commit.submit_async(0))
        assert await asyncio.to_thread(writer.entered.wait, 10)
        rest = [asyncio.ensure_future(commit.submit_async(i)) for i in range(1, 11)]
        await asyncio.to_thread(
            wait_for, lambda: len(commit._queue) == 10, timeout=10, what="the items queued"
        )
        rest[0].cancel()  # cancels the future it awaits at once
        writer.release.set()
        answers = await asyncio.gather(first, *rest[1:])
        return answers, rest[0].cancelled()

    try:
        answers, cancelled = asyncio.run(asyncio.wait_for(main(), 10))
    finally:
        commit.close()
    assert answers == [f"r{i}" for i in (0, *range(2, 11))]
    assert cancelled
    assert writer.groups == [[0], list(range(2, 11))], "the cancelled item was not written"


def test_submit_async_raises_the_groups_error() -> None:
    writer = Writer()
    writer.release.set()
    writer.fail_on = {1}
    commit = GroupCommit(writer)
    try:
        with pytest.raises(OSError, match="disk full"):
            asyncio.run(asyncio.wait_for(commit.submit_async(1), 10))
        assert asyncio.run(asyncio.wait_for(commit.submit_async(2), 10)) == "r2"
    finally:
        commit.close()
