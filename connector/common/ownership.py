"""Which partitions this instance holds, at which owner epoch, in which state: the one
answer the pipeline and the dispatcher share (docs/architecture.md, *Partition ownership
and fencing*).

The store stays the judge: a claim bumps a partition's epoch there, and a batch or a
settlement under a stale epoch is refused. This registry is what this instance believes,
kept in step by both of its parts:

* Kafka assigns a partition: the pipeline marks it :attr:`State.CLAIMING`
  (:meth:`Ownership.assigned`: paused until the store claim succeeds);
* the store claim succeeds: :attr:`State.OWNED` at the claim's epoch, or
  :attr:`State.STOPPED` when its offsets went backwards (:meth:`Ownership.claimed`);
  an operator's reset resumes it (:meth:`Ownership.resume`); the pipeline stops one
  later with :meth:`Ownership.stop`;
* the store refuses a write for a stale epoch (another instance claimed the partition):
  :attr:`State.FENCED` (:meth:`Ownership.fence`). Whoever learns it first says so: the
  pipeline at a batch, or the dispatcher at a settlement or when it reads the epochs
  back. A fence the dispatcher found is *news* for the pipeline, which takes it at its
  next batch (:meth:`Ownership.take_fenced`) and stops reading the partition;
* Kafka revokes the partition: it is forgotten (:meth:`Ownership.release`).

Thread-safe: the dispatcher's coordinator thread fences while the pipeline's thread reads
and assigns. Every method takes one lock for a few dictionary operations.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kec.event import TP

__all__ = ["Holding", "Ownership", "State"]


class State(enum.Enum):
    """Where this instance stands with a partition Kafka assigned it."""

    CLAIMING = "claiming"  # assigned, not claimed in the store yet: paused
    OWNED = "owned"  # claimed at ``epoch``: read, checkpointed, dispatched
    STOPPED = "stopped"  # claimed, not read (offsets went backwards); its actions delivered
    FENCED = "fenced"  # another instance claimed it: nothing of it is touched


@dataclass(frozen=True)
class Holding:
    """One partition's entry: its state, the epoch of this instance's claim (None while
    claiming), since when (monotonic) it is in that state, and why (stopped, fenced)."""

    state: State
    epoch: int | None
    since: float
    why: str | None = None

    @property
    def claimed(self) -> bool:
        """Whether this instance holds the partition's claim (owned or stopped)."""
        return self.state in (State.OWNED, State.STOPPED)


class Ownership:
    """The partitions this instance holds; see the module docstring."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._held: dict[TP, Holding] = {}
        self._news: dict[TP, Holding] = {}  # fenced by the dispatcher, not taken yet

    # -- the pipeline: assignment and revocation -------------------------------------------

    def assigned(self, tps: Iterable[TP], since: Mapping[TP, float] | None = None) -> None:
        """Kafka assigned ``tps`` and the store claim is pending (or failed, retried). A
        partition claiming already keeps its time; ``since`` gives others theirs (a
        claim given up: claiming again since it first was)."""
        now = self.clock()
        since = since or {}
        with self._lock:
            for tp in tps:
                held = self._held.get(tp)
                if held is None or held.state is not State.CLAIMING:
                    self._held[tp] = Holding(State.CLAIMING, None, since.get(tp, now))
                self._news.pop(tp, None)

    def claimed(self, epochs: Mapping[TP, int], stopped: Mapping[TP, str] | None = None) -> None:
        """The store claim of ``epochs``' partitions succeeded at those epochs; those in
        ``stopped`` stay stopped (with why)."""
        stopped = stopped or {}
        now = self.clock()
        with self._lock:
            for tp, epoch in epochs.items():
                why = stopped.get(tp)
                state = State.OWNED if why is None else State.STOPPED
                self._held[tp] = Holding(state, epoch, now, why)
                self._news.pop(tp, None)

    def release(self, tps: Iterable[TP]) -> None:
        """Kafka revoked ``tps`` (or a fenced partition is given up): forget them."""
        with self._lock:
            for tp in tps:
                self._held.pop(tp, None)
                self._news.pop(tp, None)

    # -- the pipeline: stopped partitions --------------------------------------------------

    def stop(self, tp: TP, why: str) -> bool:
        """Owned ``tp`` is not read any more (offsets went backwards). False: it is not
        owned (never claimed, fenced, already stopped)."""
        with self._lock:
            held = self._held.get(tp)
            if held is None or held.state is not State.OWNED:
                return False
            self._held[tp] = Holding(State.STOPPED, held.epoch, self.clock(), why)
            return True

    def resume(self, tp: TP) -> bool:
        """Stopped ``tp`` is read again (an operator reset it). False: it was not stopped."""
        with self._lock:
            held = self._held.get(tp)
            if held is None or held.state is not State.STOPPED:
                return False
            self._held[tp] = Holding(State.OWNED, held.epoch, self.clock())
            return True

    # -- either part: fencing --------------------------------------------------------------

    def fence(self, tp: TP, why: str, *, epoch: int | None = None, news: bool = False) -> bool:
        """The store refused a write for ``tp``: another instance claimed it. With
        ``epoch``, only a claim at that epoch is fenced (a newer claim of this instance
        stands). ``news``: the pipeline did not find it itself (the dispatcher did), so it
        is told at its next batch. False: ``tp`` was not claimed here (at ``epoch``)."""
        with self._lock:
            held = self._held.get(tp)
            if held is None or not held.claimed:
                return False
            if epoch is not None and held.epoch != epoch:
                return False
            fenced = Holding(State.FENCED, held.epoch, self.clock(), why)
            self._held[tp] = fenced
            if news:
                self._news[tp] = fenced
            return True

    def take_fenced(self) -> dict[TP, Holding]:
        """The partitions the dispatcher fenced since the last call (the pipeline's)."""
        if not self._news:  # a read of a dict's size needs no lock: the hot path's check
            return {}
        with self._lock:
            news, self._news = self._news, {}
        return news

    # -- reading ---------------------------------------------------------------------------

    def get(self, tp: TP) -> Holding | None:
        with self._lock:
            return self._held.get(tp)

    def state(self, tp: TP) -> State | None:
        held = self.get(tp)
        return None if held is None else held.state

    def epoch(self, tp: TP) -> int | None:
        """The epoch of this instance's claim of ``tp``, if it holds it (owned, stopped)."""
        held = self.get(tp)
        return held.epoch if held is not None and held.claimed else None

    def epochs(self, state: State | None = None) -> dict[TP, int]:
        """Each partition this instance holds a claim of, with its epoch; with ``state``,
        only those in that state (``State.OWNED``: the partitions it reads)."""
        with self._lock:
            return {
                tp: held.epoch
                for tp, held in self._held.items()
                if held.epoch is not None
                and held.claimed
                and (state is None or held.state is state)
            }

    def in_state(self, state: State) -> dict[TP, Holding]:
        """The partitions in ``state``, each with its entry."""
        with self._lock:
            return {tp: held for tp, held in self._held.items() if held.state is state}

    def snapshot(self) -> dict[TP, Holding]:
        with self._lock:
            return dict(self._held)
