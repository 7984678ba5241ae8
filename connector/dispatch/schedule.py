"""Which actions go out now: the due runs and lane heads of every owned partition, as
far as their targets have room.

A book's runs go first, one at a time, whole (:func:`take_runs`); then the lanes of the
books without runs: actions of different (target, key) lanes go out concurrently, one
lane's in order; a target that keeps order (``target.ordered``) takes a lane's followers
in the same call (:func:`take_due`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING

from connector.dispatch.lanes import Entry, PartitionBook, Run, runnable
from connector.targets.base import Target
from kec.errors import TargetError

if TYPE_CHECKING:
    from connector.dispatch.flow import FlowControl

__all__ = ["Taken", "TakenRuns", "take_due", "take_runs"]

Taken = dict[str, list[tuple[PartitionBook, Entry]]]  # target -> actions, in order
TakenRuns = dict[str, list[tuple[PartitionBook, Run]]]  # target -> runs


def take_runs(
    books: Iterable[PartitionBook],
    targets: Mapping[str, Target],
    room: dict[str, int],
    paused: Collection[str] = (),
) -> TakenRuns:
    """Mark in flight and return, per target, the books' next runs it has ``room`` for
    (counted down). A run whose target is gone, or takes runs no more (a reload), is
    turned into entries (:meth:`PartitionBook.explode`): :func:`take_due` hands those out."""
    taken: TakenRuns = {}
    for book in books:
        run = book.due_run()
        if run is None:
            continue
        name = run.target
        if name in paused:
            continue
        target = targets.get(name)
        if target is None or len(run.actions) > runnable(target):
            book.explode()
            continue
        if room[name] < len(run.actions):
            continue
        run.in_flight = True
        room[name] -= len(run.actions)
        out = taken.get(name)
        if out is None:
            out = taken[name] = []
        out.append((book, run))
    return taken


def take_due(
    books: Iterable[PartitionBook],
    targets: Mapping[str, Target],
    room: dict[str, int],
    now: float,
    refuse: Callable[[PartitionBook, Entry, TargetError], None],
    paused: Collection[str] = (),
    flow: FlowControl | None = None,
) -> Taken:
    """Mark sent and return, per target, the due actions it has ``room`` for (counted
    down); an action whose target is not configured goes to ``refuse`` at once. The lanes
    of a ``paused`` target lose their turn (no attempt is counted): resuming it gives
    them one again (:meth:`PartitionBook.wake`). ``flow``: the rate limits per key (the
    target-wide ones are in ``room`` already), told what went and what was held back."""
    taken: Taken = {}
    for book in books:
        if book.closing:
            continue
        for entry in book.ready(now):
            name = entry.action.target
            if name in paused:
                continue
            target = targets.get(name)
            if target is None:
                refuse(book, entry, TargetError(f"no target named {name!r} is configured"))
                continue
            if room[name] <= 0:
                if flow is not None:
                    flow.held(name, target)
                book.not_now(entry)
                if not any(n > 0 for n in room.values()):
                    break
                continue
            allowed = room[name]
            # Only a target with a rate has tokens to count (asked here, once an action).
            rated = flow if flow is not None and target.flow.per_second is not None else None
            if rated is not None:
                key_room = rated.key_room(target, entry.lane)
                if key_room is not None:
                    if key_room <= 0:
                        rated.held(name, target, entry.lane)
                        book.not_now(entry)
                        continue
                    allowed = min(allowed, key_room)
            out = taken.get(name)
            if out is None:
                out = taken[name] = []
            book.sent(entry)
            out.append((book, entry))
            sent = 1
            if target.ordered and allowed > 1:
                for e in book.followers(entry, allowed - 1, now):
                    book.sent(e)
                    out.append((book, e))
                    sent += 1
            room[name] -= sent
            if rated is not None:
                rated.took(target, entry.lane, sent)
    return taken
