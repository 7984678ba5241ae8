"""The ownership registry (connector.common.ownership): one answer to "does this instance hold
tp, at which epoch, in which state", shared by the pipeline and the dispatcher."""

from __future__ import annotations

import threading

import pytest

from connector.common.ownership import Ownership, State
from connector.dispatch.books import OwnedBooks
from connector.dispatch.lanes import PartitionBook

pytestmark = pytest.mark.unit

TP = ("orders", 0)
TP1 = ("orders", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_assignment_claims_then_owns() -> None:
    clock = Clock()
    own = Ownership(clock)
    own.assigned([TP, TP1])
    assert own.state(TP) is State.CLAIMING and own.epoch(TP) is None
    assert own.epochs() == {}
    clock.now = 105.0
    own.assigned([TP])  # assigned again while claiming: keeps its time
    assert own.in_state(State.CLAIMING)[TP].since == 100.0
    own.claimed({TP: 3, TP1: 4}, {TP1: "offsets went backwards"})
    assert own.state(TP) is State.OWNED and own.state(TP1) is State.STOPPED
    assert own.epochs() == {TP: 3, TP1: 4}
    assert own.epochs(State.OWNED) == {TP: 3}
    held = own.get(TP1)
    assert held is not None and held.why == "offsets went backwards" and held.claimed


def test_a_claim_given_up_is_claiming_since_it_first_was() -> None:
    clock = Clock()
    own = Ownership(clock)
    own.assigned([TP])
    waiting = own.in_state(State.CLAIMING)
    own.claimed({TP: 1})
    clock.now = 130.0
    own.assigned([TP], since={tp: h.since for tp, h in waiting.items()})
    assert own.in_state(State.CLAIMING)[TP].since == 100.0


def test_stop_and_resume_only_from_the_right_state() -> None:
    own = Ownership()
    assert not own.stop(TP, "why"), "never claimed"
    own.claimed({TP: 2})
    assert own.stop(TP, "the topic was created again")
    assert not own.stop(TP, "again"), "stopped already"
    assert own.state(TP) is State.STOPPED and own.epoch(TP) == 2
    assert own.resume(TP) and own.state(TP) is State.OWNED
    assert not own.resume(TP), "not stopped"


def test_a_fence_by_the_dispatcher_is_news_for_the_pipeline_once() -> None:
    own = Ownership()
    own.claimed({TP: 5, TP1: 5})
    assert own.fence(TP, "its settlement was refused", epoch=5, news=True)
    assert own.state(TP) is State.FENCED and own.epoch(TP) is None
    assert own.epochs() == {TP1: 5}
    news = own.take_fenced()
    assert list(news) == [TP] and news[TP].why == "its settlement was refused"
    assert own.take_fenced() == {}, "taken once"
    assert not own.fence(TP, "again", news=True), "fenced already: no second news"
    assert own.take_fenced() == {}


def test_a_fence_of_an_older_claim_leaves_a_newer_one_alone() -> None:
    own = Ownership()
    own.claimed({TP: 5})
    own.release([TP])
    own.assigned([TP])
    own.claimed({TP: 7})
    assert not own.fence(TP, "a settlement of the old book refused", epoch=5, news=True)
    assert own.state(TP) is State.OWNED and own.take_fenced() == {}


def test_a_fence_found_by_the_pipeline_itself_is_no_news() -> None:
    own = Ownership()
    own.claimed({TP: 1})
    assert own.fence(TP, "batch refused")
    assert own.state(TP) is State.FENCED and own.take_fenced() == {}


def test_a_claiming_partition_cannot_be_fenced_and_a_reclaim_clears_the_news() -> None:
    own = Ownership()
    own.assigned([TP])
    assert not own.fence(TP, "nothing claimed", news=True)
    own.claimed({TP: 1})
    own.fence(TP, "moved on", news=True)
    own.assigned([TP])  # Kafka gave it back before the pipeline took the news
    assert own.take_fenced() == {}
    assert own.state(TP) is State.CLAIMING


def test_release_forgets_everything_of_a_partition() -> None:
    own = Ownership()
    own.claimed({TP: 1, TP1: 1})
    own.fence(TP, "moved on", news=True)
    own.release([TP, TP1])
    assert own.snapshot() == {} and own.take_fenced() == {}
    assert own.state(TP) is None and own.get(TP1) is None


def test_fences_from_another_thread_all_reach_the_taker_once() -> None:
    own = Ownership()
    tps = [("t", p) for p in range(500)]
    own.claimed(dict.fromkeys(tps, 1))
    taken: list[tuple[str, int]] = []

    def fencer() -> None:
        for tp in tps:
            own.fence(tp, "moved on", epoch=1, news=True)

    thread = threading.Thread(target=fencer)
    thread.start()
    while thread.is_alive():
        taken.extend(own.take_fenced())
    thread.join()
    taken.extend(own.take_fenced())
    assert sorted(taken) == sorted(tps), "each fence taken exactly once"
    assert own.in_state(State.FENCED).keys() == set(tps)


def test_the_dispatcher_dropping_a_book_fences_its_claim_for_the_pipeline() -> None:
    own = Ownership()
    own.claimed({TP: 3, TP1: 3})
    books = OwnedBooks(own)
    books.put(PartitionBook(TP, 3, 0, 0))
    books.put(PartitionBook(TP1, 2, 0, 0))  # loaded under an older claim than the one held
    books.drop(TP, "its settlement was refused")
    books.drop(TP1, "its settlement was refused")
    assert TP not in books and TP1 not in books
    assert list(own.take_fenced()) == [TP], "only the claim the book was loaded under"
    assert own.state(TP) is State.FENCED and own.state(TP1) is State.OWNED
    books.forget(TP1)  # a release is no fence
    assert own.state(TP1) is State.OWNED and own.take_fenced() == {}
