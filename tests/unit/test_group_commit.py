"""Group commit (checkpoint.group_commit): one write for the callers that queued while
another write was in progress; each caller gets its own result or the group's error."""

from __future__ import annotations

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
