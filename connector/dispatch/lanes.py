"""Delivery bookkeeping of one partition's actions: lanes, watermark, parked rows. Pure.

The owner of a partition delivers the actions born from it. :class:`PartitionBook` keeps
them in *lanes*, one per (target, event key): actions of one lane are delivered one after
the other, in their order (``aseq``); different lanes go concurrently. A failing action
holds back its own lane only.

The book decides what the store must remember (:meth:`PartitionBook.settlement`):

* the **watermark**: every action numbered below it is settled. It moves up over
  delivered actions and over *parked* ones, never past an action still in flight or
  waiting without a row of its own;
* **parked rows**: an action that failed gets a ``retry`` row (its attempts and the time
  of its next try) and the actions behind it in its lane get ``held`` rows, so the
  watermark need not wait for a failing key; an action that gave up gets a ``dead`` row;
* **unparked** rows: parked actions delivered since, whose rows can go.

* **settled spans**: actions above the watermark delivered already (other keys went
  faster than an older action), so that the next owner does not send them again.

**Runs.** A batch whose actions all go to one target that keeps the order of a call
(``ordered``, without flow limits: :func:`runnable`) is kept as one :class:`Run` (or a few,
``batch_size`` each) instead of an entry per action in a lane per key, as long as the book
holds no lanes: a run is handed out whole, in one call, and its answer settles it whole.
A book's runs go one at a time, oldest first, and its lanes of the same target (made while
runs wait: a mixed batch, a catch-up, a replay) wait behind them, so one key's actions
still go in their order; other targets' lanes go on. An answer with a failure turns the
book's runs into entries (:meth:`PartitionBook.explode`), and from then on the book works
by lanes until they are empty; the watermark treats a run's actions as it treats entries.

After a crash, the next owner reloads the actions from the watermark on that are in no
settled span, and the parked rows, and delivers them again with the same ids: only the
actions in flight or delivered since the last settlement (a few tens of milliseconds)
are delivered twice. After a clean handover (revoke), none are.
"""

from __future__ import annotations

import bisect
import enum
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from checkpoint.base import Parked, Parking, Pending, Settlement, Tried
from kec.action import Action
from kec.event import TP

LaneKey = tuple[str, str, str]  # (target, namespace, event key)


class Stage(enum.Enum):
    WAITING = "waiting"  # in its lane, not handed to a target
    IN_FLIGHT = "in flight"  # handed to its target, no answer yet


# Module names for the members: a class attribute of an Enum costs ~10x a global's, and
# the book asks for them several times per action.
_WAITING = Stage.WAITING
_IN_FLIGHT = Stage.IN_FLIGHT


class Entry:
    """One action of the book."""

    __slots__ = (
        "action",
        "arrived",
        "aseq",
        "attempts",
        "dirty",
        "holding",
        "lane",
        "last_error",
        "next_attempt_at",
        "parked",
        "stage",
        "stored",
    )  # fmt: skip

    def __init__(self, aseq: int, action: Action, arrived: float | None = None) -> None:
        """A fresh action, never tried (positional: one is made per action queued, and
        keyword arguments cost a third of the call; :meth:`from_row` for a stored one)."""
        self.aseq = aseq
        self.action = action
        # Its lane, worked out once: the book asks for it at every step.
        self.lane: LaneKey = (action.target, action.namespace, action.event_key)
        self.stage = _WAITING
        self.attempts = 0  # failed attempts so far
        self.next_attempt_at = 0.0
        self.last_error: str | None = None
        self.parked: Parking | None = None  # the kind of row it has, or is to get
        self.stored = False  # the store holds its row
        self.holding = False  # it held the watermark back when it came (no row then)
        self.dirty = False  # its row must be (re)written at the next settlement
        self.arrived = time.monotonic() if arrived is None else arrived  # reached this book

    @classmethod
    def from_row(cls, row: Parked) -> Entry:
        """An action the store holds a parked row for (retry, held or dead)."""
        entry = cls(row.aseq, row.action)
        entry.attempts = row.attempts
        entry.next_attempt_at = row.next_attempt_at
        entry.last_error = row.last_error
        entry.parked = row.state
        entry.stored = True
        return entry

    def __repr__(self) -> str:
        return f"Entry({self.aseq}, {self.action.action_id}, {self.stage.name})"


class Run:
    """Actions ``first``, ``first + 1``, ... of one batch, all for ``target``, handed out
    together (see the module docstring)."""

    __slots__ = ("actions", "arrived", "first", "in_flight", "target")

    def __init__(self, first: int, actions: list[Action], target: str, arrived: float) -> None:
        self.first = first
        self.actions = actions
        self.target = target
        self.arrived = arrived
        self.in_flight = False

    def __repr__(self) -> str:
        return f"Run({self.first}, {len(self.actions)} actions, {self.target})"


def runnable(target: object) -> int:
    """The size of the runs ``target`` takes (0: none, its actions go by lanes): a target
    that keeps the order of a call, answers it in the calling thread and has no flow
    limits (a run goes whole or not at all, so a cap below its size would hold it)."""
    ordered = getattr(target, "ordered", False)
    if not ordered or getattr(target, "asynchronous", True):
        return 0
    flow = getattr(target, "flow", None)
    if flow is None or flow.max_in_flight is not None or flow.per_second is not None:
        return 0
    size: int = getattr(target, "batch_size", 1)
    return size if size > 1 else 0


class _Lane(deque[Entry]):
    """One (target, key)'s actions in order: a deque, so that a lane costs one object
    (most lanes hold one action, made and dropped once per action)."""

    blocked = False  # its head failed: what follows waits, with held rows


class PartitionBook:
    """The actions of one owned partition that are not settled yet."""

    def __init__(self, tp: TP, epoch: int, watermark: int, end: int) -> None:
        self.tp = tp
        self.epoch = epoch
        self._lanes: dict[LaneKey, _Lane] = {}
        # aseqs that hold the watermark back: unsettled and without a row, in order.
        self._holding: deque[int] = deque()
        self._released: set[int] = set()  # settled or parked, still in _holding
        self._watermark = watermark
        self._end = max(end, watermark)  # one past the highest aseq known
        self._unpark: list[int] = []
        self._tried: list[Tried] = []  # attempts to keep for lineage, not written yet
        self._dirty: list[Entry] = []
        self._spans: tuple[tuple[int, int], ...] = ()  # the settled spans last written
        # Lanes whose head may go now, and lanes whose head waits for a retry time.
        self._ready: deque[LaneKey] = deque()
        self._in_ready: set[LaneKey] = set()
        self._not_now: list[LaneKey] = []  # turns handed back this round, in order
        self._later: list[tuple[float, int, LaneKey]] = []  # heap: (when, aseq, lane)
        self.runs: deque[Run] = deque()  # oldest first; only the first may be in flight
        self.size = 0  # actions not settled (entries and runs)
        self.closing = False  # being released: nothing more is handed out

    @classmethod
    def load(cls, tp: TP, epoch: int, pending: Pending) -> PartitionBook:
        """A book for a partition just claimed, from what the store still holds."""
        book = cls(tp, epoch, pending.watermark, pending.end)
        merged = [Entry.from_row(p) for p in pending.parked]
        merged.extend(Entry(q.aseq, q.action) for q in pending.queued)
        merged.sort(key=lambda e: e.aseq)
        book._add(merged)
        return book

    # -- what comes in -------------------------------------------------------------------

    def queue(
        self,
        first_aseq: int,
        actions: Sequence[Action],
        run_size: Callable[[str], int] | None = None,
    ) -> None:
        """Actions just checkpointed, numbered from ``first_aseq``. ``run_size``: the size
        of the runs a target takes (:func:`runnable`; 0: none); without it, lanes only."""
        now = time.monotonic()
        if run_size is not None and actions and not self._lanes and first_aseq >= self._end:
            target = actions[0].target
            size = run_size(target)
            if size and all(a.target == target for a in actions):
                self._add_runs(first_aseq, actions, target, size, now)
                return
        if first_aseq < self._end:  # below what the book knows (never, unless replayed)
            self._add([Entry(first_aseq + i, a, now) for i, a in enumerate(actions)])
            return
        # The common case, once per action of every batch: :meth:`_add` for entries that
        # come after every entry the book holds, none parked, none waiting for a time.
        lanes, holding = self._lanes, self._holding
        ready, in_ready = self._ready, self._in_ready
        aseq = first_aseq
        for action in actions:
            entry = Entry(aseq, action, now)
            key = entry.lane
            lane = lanes.get(key)
            if lane is None:
                lane = lanes[key] = _Lane((entry,))
                if key not in in_ready:
                    in_ready.add(key)
                    ready.append(key)
            elif lane.blocked:
                lane.append(entry)
                self._park(entry, Parking.HELD)
                aseq += 1
                continue
            else:
                lane.append(entry)
                if len(lane) == 1:
                    self._schedule(entry)
            holding.append(aseq)
            entry.holding = True
            aseq += 1
        self.size += aseq - first_aseq
        self._end = max(self._end, aseq)

    def _add_runs(
        self, first: int, actions: Sequence[Action], target: str, size: int, now: float
    ) -> None:
        count = len(actions)
        for at in range(0, count, size):
            self.runs.append(Run(first + at, list(actions[at : at + size]), target, now))
        self._holding.extend(range(first, first + count))  # all held, as fresh entries
        self.size += count
        self._end = first + count

    def _known(self) -> set[int]:
        """The aseqs this book holds (entries and runs)."""
        known = {e.aseq for lane in self._lanes.values() for e in lane}
        for run in self.runs:
            known.update(range(run.first, run.first + len(run.actions)))
        return known

    def catch_up(self, pending: Pending) -> int:
        """Actions the store holds for this partition that the book never got (a batch
        that committed while its caller saw the commit fail); return how many."""
        known = self._known()
        mark = self.watermark
        fresh = [
            Entry(q.aseq, q.action)
            for q in pending.queued
            if q.aseq >= mark and q.aseq not in known and q.aseq not in self._released
        ]
        self._add(fresh)
        return len(fresh)

    def adopt(self, rows: Iterable[Parked]) -> int:
        """Retry rows found in the store that this book does not hold (``dlq replay``,
        ``replay``); return how many were taken."""
        known = self._known()
        fresh: dict[int, Entry] = {}
        for p in rows:
            if p.aseq not in known and p.aseq not in fresh:
                fresh[p.aseq] = Entry.from_row(p)
        self._add(sorted(fresh.values(), key=lambda e: e.aseq))
        return len(fresh)

    def _add(self, entries: list[Entry], counted: bool = False) -> None:
        """Put ``entries`` in their lanes. ``counted``: they are in the holding queue and
        in ``size`` already (a run's, :meth:`explode`)."""
        for entry in entries:
            if counted:  # before a blocked lane parks it: parking releases its place
                entry.holding = True
            lane = self._lanes.get(entry.lane)
            if lane is None:
                lane = self._lanes[entry.lane] = _Lane()
            if lane and lane[-1].aseq > entry.aseq:
                # An older action arriving late (a replayed one): keep the lane in order.
                keys = [e.aseq for e in lane]
                at = bisect.bisect(keys, entry.aseq)
                # Never ahead of what is in flight (a head and the followers sharing its
                # call): their outcome expects them at the front. A catch-up can load an
                # older action while a newer one of its key is out already; it goes next.
                busy = 0
                while busy < len(lane) and lane[busy].stage is not _WAITING:
                    busy += 1
                at = max(at, busy)
                lane.insert(at, entry)
                if at == 0 and lane[1].stage is _WAITING:
                    self._schedule(entry)  # the new head; the old one's turn is ignored
            else:
                lane.append(entry)
                if len(lane) == 1:
                    self._schedule(entry)
            if entry.parked is Parking.RETRY:
                lane.blocked = lane.blocked or lane[0] is entry
            elif lane.blocked and entry.parked is None:
                self._park(entry, Parking.HELD)
            if counted:
                continue
            if entry.parked is None:
                self._holding.append(entry.aseq)
                entry.holding = True
            self._end = max(self._end, entry.aseq + 1)
            self.size += 1

    # -- delivery ------------------------------------------------------------------------

    def _schedule(self, head: Entry) -> None:
        if head.next_attempt_at > 0:
            heapq.heappush(self._later, (head.next_attempt_at, head.aseq, head.lane))
        elif head.lane not in self._in_ready:
            self._in_ready.add(head.lane)
            self._ready.append(head.lane)

    def ready(self, now: float) -> Iterator[Entry]:
        """Lane heads that may be handed to their target now, each once: give each one
        to :meth:`sent`, or back with :meth:`not_now`. A lane of a target with runs waits
        for them (it holds newer actions), its turn kept; other targets' lanes go."""
        behind = {run.target for run in self.runs} if self.runs else None
        later, ready, in_ready = self._later, self._ready, self._in_ready
        if self._not_now:  # the heads that could not go last round go first
            ready.extendleft(reversed(self._not_now))
            self._not_now.clear()
        while later and later[0][0] <= now:
            key = heapq.heappop(later)[2]
            if key not in in_ready:
                in_ready.add(key)
                ready.append(key)
        for _ in range(len(ready)):
            key = ready.popleft()
            if behind and key[0] in behind:
                ready.append(key)  # after this pass: the turn is kept for later
                continue
            in_ready.discard(key)
            lane = self._lanes.get(key)
            if lane is None or not lane:
                continue
            head = lane[0]
            if head.stage is _WAITING and head.next_attempt_at <= now:
                yield head
            # else: a stale turn (the head changed, or it waits for a later retry)

    def due_run(self) -> Run | None:
        """The run to hand out next: the oldest, unless a run is in flight already (one
        call at a time: a second could be applied before the first failed)."""
        if self.closing or not self.runs:
            return None
        run = self.runs[0]
        return None if run.in_flight else run

    def run_delivered(self, run: Run) -> None:
        """Every action of ``run`` (the oldest, in flight) was delivered."""
        assert self.runs and self.runs[0] is run, "only the oldest run is in flight"
        self.runs.popleft()
        count = len(run.actions)
        self.size -= count
        self._released.update(range(run.first, run.first + count))

    def explode(self, run: Run | None = None) -> list[Entry]:
        """Turn every run of the book into entries in their lanes (the book works by
        lanes from now on), in order; return the entries of ``run`` (the oldest run, in
        flight), to be recorded one by one (an answer with a failure)."""
        assert run is None or (self.runs and self.runs[0] is run), "only the oldest is out"
        runs, self.runs = self.runs, deque()
        lanes = self._lanes
        mine: list[Entry] = []
        waiting: list[Entry] = []
        placed: dict[LaneKey, int] = {}
        for r in runs:
            for i, action in enumerate(r.actions):
                entry = Entry(r.first + i, action, r.arrived)
                if not r.in_flight:
                    waiting.append(entry)
                    continue
                # Out already, so first in its lane: while runs wait no lane goes out, so
                # a lane's other entries (replayed, or newer) all wait.
                entry.stage = _IN_FLIGHT
                entry.holding = True
                lane = lanes.get(entry.lane)
                if lane is None:
                    lane = lanes[entry.lane] = _Lane()
                at = placed.get(entry.lane, 0)
                lane.insert(at, entry)
                placed[entry.lane] = at + 1
                if r is run:
                    mine.append(entry)
        self._add(waiting, counted=True)
        return mine

    def wake(self, target: str) -> None:
        """Give every lane of ``target`` a turn again (it was paused: its heads lost
        theirs); a head waiting for its retry time keeps that time."""
        for key, lane in self._lanes.items():
            if key[0] == target and lane and lane[0].stage is _WAITING:
                self._schedule(lane[0])

    def not_now(self, entry: Entry) -> None:
        """A head :meth:`ready` gave that could not go this round: next round first."""
        if entry.lane not in self._in_ready:
            self._in_ready.add(entry.lane)
            # Not back into the queue being walked: this round's other lanes still get
            # their turn (a target without room must not hide another's actions).
            self._not_now.append(entry.lane)

    def followers(self, head: Entry, limit: int, now: float) -> list[Entry]:
        """Up to ``limit`` waiting actions right behind ``head`` in its lane, for a target
        that keeps the order of one call (they then share ``head``'s call)."""
        found: list[Entry] = []
        lane = self._lanes[head.lane]
        if len(lane) < 2:  # the common case: a lane of one
            return found
        for entry in itertools.islice(lane, 1, limit + 1):
            if entry.stage is not _WAITING or entry.next_attempt_at > now:
                break
            found.append(entry)
        return found

    def sent(self, entry: Entry) -> None:
        entry.stage = _IN_FLIGHT

    def returned(self, entry: Entry) -> None:
        """An action that shared a call with an earlier action of its lane that failed:
        not counted as delivered whatever the target said, so the lane keeps its order
        (it is delivered again, after the failed one)."""
        entry.stage = _WAITING

    def delivered(self, entry: Entry) -> None:
        lanes = self._lanes
        lane = lanes[entry.lane]
        assert lane and lane[0] is entry, "only a lane's head is in flight"
        lane.popleft()
        if lane:
            lane.blocked = False
            self._schedule(lane[0])
        else:
            del lanes[entry.lane]
        if entry.parked is None:  # the common case of :meth:`_settled`, inline
            self.size -= 1
            if entry.holding:
                self._released.add(entry.aseq)
        else:
            self._settled(entry)

    def failed(self, entry: Entry, error: str, *, retry_at: float | None) -> None:
        """The head of its lane failed: retry at ``retry_at``, or give up (None: dead)."""
        entry.stage = _WAITING
        entry.attempts += 1
        entry.last_error = error
        lane = self._lanes[entry.lane]
        if retry_at is None:
            lane.popleft()
            if lane:
                lane.blocked = False
                self._schedule(lane[0])
            else:
                del self._lanes[entry.lane]
            self._park(entry, Parking.DEAD)
            self.size -= 1
            return
        entry.next_attempt_at = retry_at
        self._schedule(entry)
        lane.blocked = True
        self._park(entry, Parking.RETRY)
        for behind in list(lane)[1:]:
            if behind.parked is None:
                self._park(behind, Parking.HELD)

    def tried(self, entry: Entry, outcome: str, at: float, detail: str | None = None) -> None:
        """Keep an attempt of ``entry`` for lineage (written with the next settlement):
        a failure, or the delivery after one."""
        action = entry.action
        self._tried.append(Tried(entry.aseq, action.action_id, action.target, at, outcome, detail))

    def _park(self, entry: Entry, state: Parking) -> None:
        # Only an entry in the holding queue releases its place there: one parked as it
        # came (its lane blocked) never held the watermark, and a release of it would stay
        # in the set for ever (and be written as a settled span below the watermark).
        if entry.parked is None and entry.holding:
            self._released.add(entry.aseq)
        entry.parked = state
        if not entry.dirty:
            entry.dirty = True
            self._dirty.append(entry)

    def _settled(self, entry: Entry) -> None:
        self.size -= 1
        if entry.parked is None:
            if entry.holding:
                self._released.add(entry.aseq)
        else:
            if entry.dirty:  # no need to write a row that is to be deleted
                entry.dirty = False
                self._dirty.remove(entry)
            if entry.stored:
                self._unpark.append(entry.aseq)

    # -- what goes out -------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Lanes and runs with actions handed out and not answered."""
        runs = 1 if self.runs and self.runs[0].in_flight else 0
        return runs + sum(1 for lane in self._lanes.values() if lane[0].stage is _IN_FLIGHT)

    @property
    def watermark(self) -> int:
        holding, released = self._holding, self._released
        while holding and holding[0] in released:
            released.discard(holding.popleft())
        return holding[0] if holding else self._end

    def _settled_spans(self) -> tuple[tuple[int, int], ...]:
        """The released actions above the watermark, as spans (few: they are the ones
        delivered while an older one of another key was still on its way)."""
        spans: list[tuple[int, int]] = []
        for aseq in sorted(self._released):
            if spans and spans[-1][1] == aseq:
                spans[-1] = (spans[-1][0], aseq + 1)
            else:
                spans.append((aseq, aseq + 1))
        return tuple(spans)

    def settlement(self) -> Settlement | None:
        """What the store must write now (None: nothing changed since the last one)."""
        park = [
            Parked(self.tp, e.aseq, e.action, e.parked, e.attempts, e.next_attempt_at,
                   e.last_error)
            for e in self._dirty
            if e.parked is not None
        ]  # fmt: skip
        for e in self._dirty:
            # The write may commit although its caller sees it fail (a lost COMMIT
            # acknowledgement): from now on the row may exist, so delivering the action
            # later must delete it (deleting a row that is not there is harmless).
            if e.parked is not None:
                e.stored = True
        mark = self.watermark
        spans = self._settled_spans()
        unchanged = mark == self._watermark and spans == self._spans
        if not park and not self._unpark and not self._tried and unchanged:
            return None
        return Settlement(self.epoch, mark, park, list(self._unpark), spans, list(self._tried))

    def settled(self, settlement: Settlement) -> None:
        """The store holds ``settlement`` now."""
        for entry in self._dirty:
            entry.dirty = False
            entry.stored = True
        self._dirty.clear()
        written = set(settlement.unpark)
        self._unpark = [a for a in self._unpark if a not in written]
        del self._tried[: len(settlement.tried)]  # only appended to since
        self._watermark = max(self._watermark, settlement.watermark)
        self._spans = tuple(settlement.done)
