"""Runs (connector.dispatch.lanes.Run): a batch for a target that keeps the order of a
call, handed out and settled whole, and turned into entries when its answer holds a
failure. Checked through the dispatcher's own steps (take_runs, take_due, Outcomes)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint.base import Pending, Queued
from connector.common.ownership import Ownership
from connector.common.retry import RetryPolicy
from connector.dispatch.books import OwnedBooks
from connector.dispatch.delivery import Answer, TargetWorkers
from connector.dispatch.lanes import Entry, PartitionBook, Run, runnable
from connector.dispatch.outcomes import DispatchStats, Outcomes
from connector.dispatch.schedule import take_due, take_runs
from connector.targets.base import FlowLimits, Target
from kec.action import Action, ActionKind
from kec.errors import TargetError, TargetRejected

TP = ("orders", 0)


class _Target(Target):
    def __init__(self, name: str, *, ordered: bool, batch_size: int, flow: FlowLimits) -> None:
        self.name = name
        self.ordered = ordered
        self.batch_size = batch_size
        self.flow = flow

    def deliver(self, action: Action) -> None:  # not called: the tests answer for it
        raise AssertionError("not called")


def _targets(batch: int = 4) -> dict[str, Target]:
    return {
        "log": _Target("log", ordered=True, batch_size=batch, flow=FlowLimits()),
        "hook": _Target("hook", ordered=False, batch_size=batch, flow=FlowLimits()),
    }


def action(key: str, n: int, target: str = "log") -> Action:
    return Action("r", ActionKind.NOTIFY, target, "shop", (f"{key}-{n}",), key)


class _Watched(PartitionBook):
    """A book that notes what it was told was delivered, in order."""

    def __init__(self, tp: tuple[str, int] = TP) -> None:
        super().__init__(tp, 1, 0, 0)
        self.seen: list[int] = []

    def delivered(self, entry: Entry) -> None:
        super().delivered(entry)
        self.seen.append(entry.aseq)

    def run_delivered(self, run: Run) -> None:
        super().run_delivered(run)
        self.seen.extend(range(run.first, run.first + len(run.actions)))


def _world(*books: PartitionBook) -> tuple[OwnedBooks, Outcomes, list[float]]:
    ownership = Ownership()
    ownership.claimed({b.tp: 1 for b in books})
    owned = OwnedBooks(ownership)
    for book in books:
        owned.put(book)
    clock = [0.0]
    outcomes = Outcomes(owned, RetryPolicy(max_attempts=3), DispatchStats(), lambda: clock[0])
    return owned, outcomes, clock


def test_only_an_ordered_synchronous_target_without_flow_limits_takes_runs() -> None:
    log = _Target("log", ordered=True, batch_size=2000, flow=FlowLimits())
    assert runnable(log) == 2000
    assert runnable(_Target("h", ordered=False, batch_size=2000, flow=FlowLimits())) == 0
    capped = FlowLimits(max_in_flight=10)
    assert runnable(_Target("c", ordered=True, batch_size=2000, flow=capped)) == 0
    rated = FlowLimits(per_second=5.0)
    assert runnable(_Target("r", ordered=True, batch_size=2000, flow=rated)) == 0
    assert runnable(_Target("one", ordered=True, batch_size=1, flow=FlowLimits())) == 0
    answering = _Target("a", ordered=True, batch_size=2000, flow=FlowLimits())
    answering.asynchronous = True  # answers from a thread of its own: calls overlap
    assert runnable(answering) == 0


def test_a_batch_goes_out_whole_and_settles_whole() -> None:
    targets = _targets(batch=10)
    book = _Watched()
    owned, outcomes, _ = _world(book)
    book.queue(0, [action(k, n) for n, k in enumerate("abab")], lambda n: runnable(targets[n]))
    assert len(book.runs) == 1 and book.size == 4
    assert take_due([book], targets, {"log": 10, "hook": 10}, 0.0, _refused) == {}
    taken = take_runs([book], targets, {"log": 10, "hook": 10})
    ((b, run),) = taken["log"]
    assert b is book and run.in_flight and [a.event_key for a in run.actions] == list("abab")
    assert book.in_flight == 1, "a release waits for it"
    assert take_runs([book], targets, {"log": 10, "hook": 10}) == {}, "one at a time"
    assert book.watermark == 0
    outcomes.record(Answer("log", [], {}, True, {}, taken["log"]))
    assert (book.seen, book.size, book.watermark, owned.pending) == ([0, 1, 2, 3], 0, 4, -4)


def test_runs_go_oldest_first_and_their_targets_lanes_made_meanwhile_wait_for_them() -> None:
    """A mixed batch comes while runs wait: its lane of the runs' target (a newer action
    of a key a run holds) goes only once every run was delivered; the other target's
    lane goes at once."""
    targets = _targets(batch=2)
    book = _Watched()
    _, outcomes, _ = _world(book)
    size = lambda n: runnable(targets[n])  # noqa: E731
    book.queue(0, [action("a", 0), action("b", 1), action("a", 2)], size)  # runs of 2 and 1
    book.queue(3, [action("a", 3, "hook"), action("a", 4)], size)  # mixed: lanes
    assert [len(r.actions) for r in book.runs] == [2, 1]
    room = {"log": 8, "hook": 8}
    other = take_due([book], targets, room, 0.0, _refused)
    assert {n: [e.aseq for _, e in out] for n, out in other.items()} == {"hook": [3]}
    for expected in ([0, 1], [2]):
        taken = take_runs([book], targets, room)
        assert take_due([book], targets, room, 0.0, _refused) == {}
        ((_, run),) = taken["log"]
        assert list(range(run.first, run.first + len(run.actions))) == expected
        outcomes.record(Answer("log", [], {}, True, {}, taken["log"]))
    due = take_due([book], targets, room, 0.0, _refused)
    assert {n: [e.aseq for _, e in out] for n, out in due.items()} == {"log": [4]}


def test_a_failure_turns_the_runs_into_entries_and_keeps_each_key_in_order() -> None:
    """a-0 fails in a run of a-0 b-1 a-2 c-3: b and c are delivered, a-2 waits behind a-0
    (it reached the target after a failure of its key, so it is sent again after it), and
    the next run becomes entries too."""
    targets = _targets(batch=4)
    book = _Watched()
    _, outcomes, clock = _world(book)
    size = lambda n: runnable(targets[n])  # noqa: E731
    book.queue(0, [action(k, n) for n, k in enumerate("abac")], size)
    book.queue(4, [action("a", 4), action("d", 5)], size)
    taken = take_runs([book], targets, {"log": 4, "hook": 4})
    ((_, run),) = taken["log"]
    failed = {run.actions[0].action_id: TargetError("503")}
    outcomes.record(Answer("log", [], failed, True, {}, taken["log"]))
    assert not book.runs and sorted(book.seen) == [1, 3]
    settlement = book.settlement()
    assert settlement is not None
    assert [(p.aseq, p.state.value) for p in settlement.park] == [
        (0, "retry"), (2, "held"), (4, "held"),
    ]  # fmt: skip
    assert settlement.watermark == 5, "over the parked rows, up to d-5 (waiting)"
    book.settled(settlement)
    room = {"log": 4, "hook": 4}
    first = take_due([book], targets, room, clock[0], _refused)
    assert [e.aseq for _, e in first["log"]] == [5], "d goes, a waits for its retry"
    outcomes.record(Answer("log", first["log"], {}, True))
    clock[0] = 100.0
    again = take_due([book], targets, {"log": 4, "hook": 4}, clock[0], _refused)
    assert [e.aseq for _, e in again["log"]] == [0, 2, 4], "a's lane at once, in order"
    outcomes.record(Answer("log", again["log"], {}, True))
    assert book.seen == [1, 3, 5, 0, 2, 4] and book.watermark == 6 and book.size == 0


def test_a_run_in_flight_stays_ahead_of_the_lanes_made_while_it_was_out() -> None:
    """Runs a-0 b-1 out; a mixed batch then makes a lane for a (a-2) behind it. b-1
    fails: a-0, answered delivered, is the head of a's lane, and a-2 goes after it."""
    targets = _targets(batch=4)
    book = _Watched()
    _, outcomes, clock = _world(book)
    size = lambda n: runnable(targets[n])  # noqa: E731
    book.queue(0, [action("a", 0), action("b", 1)], size)
    taken = take_runs([book], targets, {"log": 4, "hook": 4})
    book.queue(2, [action("a", 2), action("x", 3, "hook")], size)
    ((_, run),) = taken["log"]
    outcomes.record(Answer("log", [], {run.actions[1].action_id: TargetError("503")}, True,
                           {}, taken["log"]))  # fmt: skip
    assert book.seen == [0]
    due = take_due([book], targets, {"log": 4, "hook": 4}, clock[0], _refused)
    assert {n: [e.aseq for _, e in out] for n, out in due.items()} == {"log": [2], "hook": [3]}


def test_a_paused_target_keeps_its_runs_and_a_gone_target_gets_entries() -> None:
    targets = _targets(batch=4)
    book = _Watched()
    _world(book)
    book.queue(0, [action("a", 0), action("b", 1)], lambda n: runnable(targets[n]))
    assert take_runs([book], targets, {"log": 4, "hook": 4}, paused={"log"}) == {}
    assert len(book.runs) == 1 and not book.runs[0].in_flight
    refused: list[int] = []
    without = {"hook": targets["hook"]}  # a reload removed "log"
    assert take_runs([book], without, {"hook": 4}) == {}
    assert not book.runs, "turned into entries"
    take_due([book], without, {"hook": 4}, 0.0, lambda b, e, err: refused.append(e.aseq))
    assert refused == [0, 1]


def test_a_catch_up_does_not_load_again_what_a_run_holds() -> None:
    targets = _targets(batch=4)
    book = _Watched()
    _world(book)
    book.queue(0, [action("a", 0), action("b", 1)], lambda n: runnable(targets[n]))
    stored = Pending(watermark=0, end=3, queued=[Queued(TP, n, action(k, n)) for n, k in
                                                 enumerate("abc")])  # fmt: skip
    assert book.catch_up(stored) == 1 and book.size == 3


def test_calls_of_runs_hold_as_many_as_the_target_takes() -> None:
    targets = _targets(batch=4)
    calls: list[Answer] = []
    workers = TargetWorkers(targets, RetryPolicy(), calls.append)
    books = [_Watched(("orders", p)) for p in range(3)]
    _world(*books)
    for p, book in enumerate(books):
        book.queue(0, [action(f"k{p}", n) for n in range(p + 1)], lambda n: runnable(targets[n]))
    taken = take_runs(books, targets, {"log": 12, "hook": 4})
    calls_put: list[list[int]] = []
    workers._calls["log"] = _Sink(calls_put)  # type: ignore[assignment]
    workers.in_flight["log"] = workers.actions_in_flight["log"] = 0
    workers.submit_runs("log", taken["log"])
    assert calls_put == [[1, 2], [3]], "1 + 2 + 3 > 4: each call within batch_size, runs whole"
    assert workers.actions_in_flight["log"] == 6 and workers.in_flight["log"] == 2


class _Sink:
    def __init__(self, seen: list[list[int]]) -> None:
        self.seen = seen

    def put(self, call: object) -> None:
        self.seen.append([len(r.actions) for _, r in call.runs])  # type: ignore[attr-defined]


def _refused(book: PartitionBook, entry: Entry, error: TargetError) -> None:
    raise AssertionError(f"refused {entry}: {error}")


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(
        st.tuples(
            st.integers(0, 1),  # which book
            st.lists(st.sampled_from("abc"), min_size=1, max_size=7),
            st.sampled_from(["log", "log", "mixed"]),
        ),
        min_size=1,
        max_size=8,
    ),
    outcomes=st.lists(st.sampled_from(["ok", "ok", "ok", "retry", "dead"]), max_size=200),
)
def test_every_action_is_settled_once_and_each_key_in_order_with_runs(
    batches: list[tuple[int, list[str], str]], outcomes: list[str]
) -> None:
    """Batches (runs, or lanes when mixed) queued between rounds; each call answered with
    some failures, retried or dead: every action settles once, each (target, key) is
    delivered in its order, and the watermark ends past everything."""
    targets = _targets(batch=3)
    books = [_Watched(("orders", 0)), _Watched(("orders", 1))]
    owned, recorder, clock = _world(*books)
    size = lambda n: runnable(targets[n])  # noqa: E731
    step = iter(outcomes)
    dead: list[tuple[int, int]] = []
    ends = [0, 0]
    pending = list(batches)
    made: dict[tuple[int, int], Action] = {}
    rounds = 0
    while pending or any(b.size for b in books):
        rounds += 1
        assert rounds < 500, "stuck"
        if pending:
            which, keys, kind = pending.pop(0)
            actions = [
                action(k, ends[which] + i, "hook" if kind == "mixed" and i % 2 else "log")
                for i, k in enumerate(keys)
            ]
            for i, a in enumerate(actions):
                made[(which, ends[which] + i)] = a
            books[which].queue(ends[which], actions, size)
            ends[which] += len(actions)
        room = {"log": 6, "hook": 6}
        runs = take_runs(books, targets, room)
        due = take_due(books, targets, room, clock[0], _refused)
        answers = [Answer(n, [], {}, True, {}, r) for n, r in runs.items()]
        answers += [Answer(n, e, {}, True) for n, e in due.items()]
        for answer in answers:
            sent = [a for _, r in answer.runs for a in r.actions] or [
                e.action for _, e in answer.entries
            ]
            failures: dict[str, BaseException] = {}
            for a in sent:
                outcome = next(step, "ok")
                if outcome == "retry":
                    failures[a.action_id] = TargetError("later")
                elif outcome == "dead":
                    failures[a.action_id] = TargetRejected("no")
            recorder.record(Answer(answer.target, answer.entries, failures, True, {}, answer.runs))
        for book in books:
            settlement = book.settlement()
            if settlement is not None:
                for p in settlement.park:
                    if p.state.value == "dead":
                        dead.append((books.index(book), p.aseq))
                book.settled(settlement)
        clock[0] += 1000.0  # every retry is due next round
    settled = sorted([(i, a) for i, b in enumerate(books) for a in b.seen] + dead)
    assert settled == sorted(made), "each once, none lost"
    for i, book in enumerate(books):
        lanes: dict[tuple[str, str], list[int]] = {}
        for aseq in book.seen:
            a = made[(i, aseq)]
            lanes.setdefault((a.target, a.event_key), []).append(aseq)
        for order in lanes.values():
            assert order == sorted(order), "one key's actions in their order"
        assert book.watermark == ends[i] and not book.runs
    assert owned.pending == -len(made), "each counted off once (the test never added them)"
