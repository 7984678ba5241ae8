"""The read watch: a partition this client starts reading must deliver what Kafka holds.

A topic deleted and created again can leave librdkafka fetching a partition under the id
of the topic as it was before, silently: it is assigned, it is sought, and nothing
arrives, however often. Two clients meet it: one that held the partition across the
recreation (an operator then resets it), and one that subscribed before the recreation
and is assigned the partition later (a member restarted meanwhile, a rebalance after a
kill). Neither raises an error; the partition would wait for the next rebalance, and its
records' actions with it.

So every partition the pipeline starts reading (adopted at the store's next offset or at
Kafka's committed one, or reset by an operator) is watched until it reads: until a batch
holds a record of it (checkpointed or not: a batch that fails for want of the store or
the dead-letter topic still proves that the client fetches) or the store's next offset
moves. When nothing of it came ``FIRST_LOOK`` seconds after that start while Kafka holds
records from where it starts that the client has not fetched (its position did not move
past them: a client that fetches moves past transaction markers and aborted records,
which yield no event), it is sought there again, ``SEEKS`` times ``FIRST_LOOK`` apart,
and then the client is given up (a fatal error: the supervisor starts a new client, which
reads the topic as it is now). While Kafka holds nothing to read, the looks space out up
to the pipeline's topic check interval: an idle partition costs one offsets request per
interval until it reads its first record.

:class:`ReadWatch` decides; the pipeline asks Kafka and seeks.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kec.event import TP

FIRST_LOOK = 5.0  # default seconds after a start (or a seek) to look that it reads
SEEKS = 2  # seeks at most, FIRST_LOOK apart, before the client is given up


class Verdict(enum.Enum):
    READS = "reads"  # the store's next offset moved since the start: no longer watched
    LATER = "later"  # not due, nothing to read yet, or nothing can be read now
    SEEK = "seek"  # Kafka holds records from the start and none came: seek again
    GIVE_UP = "give up"  # sought SEEKS times and still nothing: a new client is needed


@dataclass
class Watched:
    """One partition's watch. ``start`` is the store's next offset when reading started
    (``None``: none, it starts at Kafka's committed offset or by ``auto.offset.reset``);
    the partition reads once the store's next offset is something else."""

    start: int | None
    since: str  # "it was assigned", "an operator reset it": for the log and the error
    due: float  # monotonic time of the next look
    wait: float  # the pause before the next look while there is nothing to read
    seeks: int = SEEKS
    asked: int = 0  # looks that asked Kafka


class ReadWatch:
    """The watched partitions and when each is looked at next."""

    def __init__(self, first_look: float = FIRST_LOOK, longest_wait: float = 30.0) -> None:
        self._first = first_look
        self._longest = max(first_look, longest_wait)
        self._watched: dict[TP, Watched] = {}

    def __bool__(self) -> bool:
        return bool(self._watched)

    def __contains__(self, tp: object) -> bool:
        return tp in self._watched

    def start(self, tp: TP, start: int | None, since: str, now: float) -> None:
        """``tp`` starts reading (again) where the store's next offset is ``start``."""
        self._watched[tp] = Watched(start, since, now + self._first, self._first)

    def fetched(self, tps: Iterable[TP]) -> None:
        """A batch held records of ``tps``: their client fetches them."""
        for tp in tps:
            self._watched.pop(tp, None)

    def get(self, tp: TP) -> Watched | None:
        return self._watched.get(tp)

    def drop(self, tp: TP) -> None:
        self._watched.pop(tp, None)

    def due(self, now: float) -> list[tuple[TP, Watched]]:
        return [(tp, w) for tp, w in self._watched.items() if now >= w.due]

    def look(
        self,
        tp: TP,
        now: float,
        next_offset: int | None,
        *,
        can_read: bool,
        holds: Callable[[], bool],
    ) -> Verdict:
        """Look at ``tp`` (due): ``next_offset`` is the store's now, ``can_read`` whether
        anything could have been read and checkpointed (not paused, the store and Kafka
        up), ``holds`` asks Kafka whether it holds records from where the partition
        starts (called only when the answer matters)."""
        w = self._watched.get(tp)
        if w is None or now < w.due:
            return Verdict.LATER
        if next_offset != w.start:
            del self._watched[tp]
            return Verdict.READS
        if not can_read:
            w.due = now + self._first
            return Verdict.LATER
        w.asked += 1
        if not holds():
            w.due = now + w.wait
            w.wait = min(self._longest, w.wait * 2)
            return Verdict.LATER
        if w.seeks <= 0:
            del self._watched[tp]
            return Verdict.GIVE_UP
        w.seeks -= 1
        w.due, w.wait = now + self._first, self._first
        return Verdict.SEEK
