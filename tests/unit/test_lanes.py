"""Delivery bookkeeping of one partition (connector.dispatch.lanes): lanes, watermark,
parked rows."""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint.base import Parked, Parking, Pending, Queued
from connector.dispatch.lanes import Entry, PartitionBook
from kec.action import Action, ActionKind

TP = ("orders", 0)


def action(key: str, n: int, target: str = "hook") -> Action:
    return Action("r", ActionKind.NOTIFY, target, "shop", (f"{key}-{n}",), key)


def take(book: PartitionBook, now: float = 0.0) -> list[Entry]:
    heads = list(book.ready(now))
    for head in heads:
        book.sent(head)
    return heads


def test_lanes_go_concurrently_one_key_in_order() -> None:
    book = PartitionBook(TP, epoch=1, watermark=0, end=0)
    book.queue(0, [action("a", 0), action("b", 0), action("a", 1), action("a", 2)])
    first = take(book)
    assert [(e.action.event_key, e.aseq) for e in first] == [("a", 0), ("b", 1)]
    assert take(book) == [], "nothing new while each lane's head is in flight"
    book.delivered(first[1])
    assert book.watermark == 0, "aseq 0 is still in flight"
    book.delivered(first[0])
    assert book.watermark == 2
    (second,) = take(book)
    assert second.aseq == 2
    book.delivered(second)
    assert book.watermark == 3
    assert book.size == 1


def test_an_ordered_target_may_take_a_lane_at_once() -> None:
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action("a", n) for n in range(4)])
    (head,) = list(book.ready(0.0))
    followers = book.followers(head, 2, 0.0)
    assert [e.aseq for e in followers] == [1, 2]
    for entry in (head, *followers):
        book.sent(entry)
    book.delivered(head)
    book.failed(followers[0], "TargetError: 503", retry_at=5.0)
    book.returned(followers[1])  # delivered after a failure in its call: sent again later
    settlement = book.settlement()
    assert settlement is not None
    assert [(p.aseq, p.state) for p in settlement.park] == [
        (1, Parking.RETRY),
        (2, Parking.HELD),
        (3, Parking.HELD),
    ]
    assert settlement.watermark == 4, "the parked lane does not hold the watermark back"


def test_actions_delivered_out_of_order_are_written_as_settled_spans() -> None:
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action("slow", 0), action("b", 0), action("c", 0), action("slow", 1)])
    book.queue(4, [action("d", 0)])
    heads = take(book)
    assert [e.aseq for e in heads] == [0, 1, 2, 4]
    for entry in heads[1:]:
        book.delivered(entry)
    settlement = book.settlement()
    assert settlement is not None
    assert (settlement.watermark, list(settlement.done)) == (0, [(1, 3), (4, 5)])
    book.settled(settlement)
    assert book.settlement() is None
    book.delivered(heads[0])
    settlement = book.settlement()
    assert settlement is not None
    assert (settlement.watermark, list(settlement.done)) == (3, [(4, 5)])


def test_a_failing_key_holds_back_only_its_own_lane() -> None:
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action("a", 0), action("b", 0), action("a", 1), action("b", 1)])
    a0, b0 = take(book)
    book.failed(a0, "TargetError: 503", retry_at=10.0)
    book.delivered(b0)
    assert [e.aseq for e in take(book, now=1.0)] == [3], "b goes on, a waits"
    settlement = book.settlement()
    assert settlement is not None
    assert {(p.aseq, p.state) for p in settlement.park} == {(0, Parking.RETRY), (2, Parking.HELD)}
    assert settlement.watermark == 3  # aseq 3 (b-1) is in flight
    book.settled(settlement)
    assert book.settlement() is None, "nothing changed since"
    (retry,) = take(book, now=10.0)
    assert retry.aseq == 0 and retry.attempts == 1
    book.delivered(retry)
    (held,) = take(book, now=10.0)
    book.delivered(held)
    settlement = book.settlement()
    assert settlement is not None
    assert sorted(settlement.unpark) == [0, 2], "delivered at last: their rows go"


def test_a_dead_action_lets_its_lane_go_on() -> None:
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action("a", 0), action("a", 1)])
    (head,) = take(book)
    book.failed(head, "TargetRejected: 422", retry_at=None)
    (next_one,) = take(book)
    assert next_one.aseq == 1
    settlement = book.settlement()
    assert settlement is not None
    assert [(p.aseq, p.state, p.last_error) for p in settlement.park] == [
        (0, Parking.DEAD, "TargetRejected: 422")
    ]
    assert book.size == 1


def test_a_new_owner_resumes_from_what_the_store_holds() -> None:
    pending = Pending(
        watermark=7,
        end=10,
        queued=[Queued(TP, 7, action("b", 0)), Queued(TP, 9, action("a", 2))],
        parked=[
            Parked(TP, 3, action("a", 0), Parking.RETRY, 2, 50.0, "TargetError: 503"),
            Parked(TP, 5, action("a", 1), Parking.HELD),
        ],
    )
    book = PartitionBook.load(TP, epoch=4, pending=pending)
    assert book.size == 4
    assert [e.aseq for e in take(book, now=0.0)] == [7], "lane a waits for its retry"
    (retry,) = take(book, now=50.0)
    assert (retry.aseq, retry.attempts) == (3, 2)
    book.delivered(retry)
    assert [e.aseq for e in take(book, now=50.0)] == [5]


def test_adopted_retries_join_their_lane_in_order() -> None:
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(5, [action("a", 5)])
    replayed = Parked(TP, 2, action("a", 2), Parking.RETRY)
    assert book.adopt([replayed, replayed]) == 1
    (head,) = take(book)
    assert head.aseq == 2, "the older action goes first"


@settings(max_examples=200, deadline=None)
@given(
    keys=st.lists(st.sampled_from("abcd"), min_size=1, max_size=40),
    outcomes=st.lists(
        st.sampled_from(["ok", "ok", "ok", "retry", "dead"]), min_size=200, max_size=200
    ),
)
def test_every_action_is_settled_once_and_each_lane_in_order(
    keys: list[str], outcomes: list[str]
) -> None:
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action(k, i) for i, k in enumerate(keys)])
    delivered: dict[str, list[int]] = {}
    dead: set[int] = set()
    now, step = 0.0, iter(outcomes)
    while book.size:
        heads = take(book, now)
        for entry in heads:
            outcome = next(step, "ok")
            if outcome == "ok":
                book.delivered(entry)
                delivered.setdefault(entry.action.event_key, []).append(entry.aseq)
            elif outcome == "dead":
                book.failed(entry, "TargetRejected: no", retry_at=None)
                dead.add(entry.aseq)
            else:
                book.failed(entry, "TargetError: later", retry_at=now + 1)
        settlement = book.settlement()
        if settlement is not None:
            book.settled(settlement)
        now += 1
    seen = [a for lane in delivered.values() for a in lane]
    assert sorted(seen + sorted(dead)) == list(range(len(keys))), "each once, none lost"
    for lane in delivered.values():
        assert lane == sorted(lane), "one key's actions in their order"
    assert book.watermark == len(keys)


def test_catch_up_adds_only_the_actions_the_book_never_got() -> None:
    """A batch committed though its caller saw the commit fail: the store's pending list
    holds its actions (4, 5) beside ones the book has (2, 3 in flight or delivered)."""
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action("a", 0), action("b", 1), action("a", 2), action("c", 3)])
    heads = take(book)  # a-0, b-1, c-3
    for head in heads:
        book.delivered(head)
    (a2,) = take(book)
    assert a2.aseq == 2, "in flight"
    stored = Pending(
        watermark=0,
        end=6,
        queued=[Queued(TP, n, action(k, n)) for n, k in enumerate("abacde")],
    )
    assert book.catch_up(stored) == 2
    assert book.catch_up(stored) == 0, "twice is once"
    assert book.size == 3  # a-2 in flight, d-4 and e-5 to go
    assert sorted(e.aseq for e in take(book)) == [4, 5]


def test_an_older_action_loaded_late_waits_behind_the_one_in_flight() -> None:
    """A catch-up loads a-1 while a-2 of the same key is out already (b-0 in flight keeps
    the watermark at 0): the in-flight head stays the head (its outcome expects it there),
    and a-1 goes right after it."""
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action("b", 0)])
    book.queue(2, [action("a", 2), action("a", 3)])
    heads = {e.aseq: e for e in take(book)}
    assert sorted(heads) == [0, 2]
    stored = Pending(watermark=0, end=4, queued=[Queued(TP, 1, action("a", 1))])
    assert book.catch_up(stored) == 1
    book.delivered(heads[2])  # raised "only a lane's head is in flight" before
    (late,) = take(book)
    assert late.aseq == 1
    book.delivered(late)
    (last,) = take(book)
    assert last.aseq == 3
    book.delivered(last)
    book.delivered(heads[0])
    assert book.watermark == 4


def test_actions_parked_as_they_come_leave_nothing_behind_once_delivered() -> None:
    """a-0 fails; a-2 and a-4 come while its lane is blocked (held at once, never holding
    the watermark). Once all is delivered nothing stays in memory, and no settled span
    below the watermark is written (status counted such spans twice)."""
    book = PartitionBook(TP, 1, 0, 0)
    book.queue(0, [action("a", 0), action("b", 1)])
    for head in take(book):
        if head.aseq == 0:
            book.failed(head, "TargetError: 503", retry_at=1.0)
        else:
            book.delivered(head)
    book.queue(2, [action("a", 2), action("b", 3), action("a", 4)])
    first = book.settlement()
    assert first is not None
    assert [(p.aseq, p.state) for p in first.park] == [
        (0, Parking.RETRY), (2, Parking.HELD), (4, Parking.HELD),
    ]  # fmt: skip
    book.settled(first)
    while book.size:
        for head in take(book, now=2.0):
            book.delivered(head)
    last = book.settlement()
    assert last is not None
    assert (last.watermark, list(last.done), sorted(last.unpark)) == (5, [], [0, 2, 4])
    assert book._released == set()


class _GeneralBook(PartitionBook):
    """A book that queues through the general path (:meth:`PartitionBook._add`), to check
    :meth:`PartitionBook.queue`'s fast path against."""

    def queue(self, first_aseq: int, actions: Iterable[Action]) -> None:
        self._add([Entry(first_aseq + i, a, 0.0) for i, a in enumerate(actions)])


def _settle(book: PartitionBook) -> tuple[object, ...] | None:
    settlement = book.settlement()
    if settlement is None:
        return None
    book.settled(settlement)
    parked = sorted((p.aseq, p.state.value, p.attempts) for p in settlement.park)
    return (settlement.watermark, parked, sorted(settlement.unpark), settlement.done)


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.sampled_from("abcde"), min_size=1, max_size=12), min_size=1, max_size=8
    ),
    outcomes=st.lists(st.sampled_from(["ok", "ok", "retry", "dead", "hold"]), max_size=120),
)
def test_queueing_a_batch_does_what_adding_its_entries_one_by_one_does(
    batches: list[list[str]], outcomes: list[str]
) -> None:
    """Batches queued between rounds of outcomes (lanes busy, blocked by a retry, emptied):
    the same heads handed out, the same settlements, the same watermark."""
    fast, general = PartitionBook(TP, 1, 0, 0), _GeneralBook(TP, 1, 0, 0)
    step = iter(outcomes)
    aseq, now = 0, 0.0
    pending = list(batches)
    while pending or fast.size:
        if pending:
            keys = pending.pop(0)
            for book in (fast, general):
                book.queue(aseq, [action(k, aseq + i) for i, k in enumerate(keys)])
            aseq += len(keys)
        heads = [take(fast, now), take(general, now)]
        assert [e.aseq for e in heads[0]] == [e.aseq for e in heads[1]]
        for e_fast, e_general in zip(*heads, strict=True):
            outcome = next(step, "ok")
            for book, entry in ((fast, e_fast), (general, e_general)):
                if outcome == "ok":
                    book.delivered(entry)
                elif outcome == "dead":
                    book.failed(entry, "TargetRejected: no", retry_at=None)
                elif outcome == "retry":
                    book.failed(entry, "TargetError: later", retry_at=now + 2)
                else:
                    book.returned(entry)
                    book.not_now(entry)
        assert _settle(fast) == _settle(general)
        assert (fast.size, fast.watermark) == (general.size, general.watermark)
        now += 1
    assert fast.watermark == general.watermark == aseq
