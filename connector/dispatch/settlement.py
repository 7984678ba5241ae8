"""The dispatcher's side of the store: what it loads, the settlements it writes, and the
ownership checks.

Every ``settle_interval`` (and at revoke and stop) each partition's settlement
(watermark, settled spans, parked rows: see :mod:`connector.dispatch.lanes`) is written
in one store transaction, fenced by the partition's owner epoch: a partition whose
settlement is refused, or whose epoch in the store is no longer the one this instance
holds (:class:`~connector.common.ownership.Ownership`), is dropped at once and marked fenced
there, so the pipeline stops reading it too.
"""

from __future__ import annotations

from collections.abc import Sequence

from checkpoint.base import DispatchStore, Parked, Pending, Settlement
from connector.common.outage import Outage
from connector.common.ownership import Ownership
from connector.dispatch.books import OwnedBooks
from connector.dispatch.outcomes import DispatchStats
from kec.errors import CheckpointError
from kec.event import TP
from kec.faults import crash_point

__all__ = ["Settler"]


class Settler:
    """Reads and writes the store for the books (the coordinator's thread, except
    :meth:`load`); keeps ``stats.store_ok`` and logs a store outage once."""

    def __init__(
        self,
        store: DispatchStore,
        books: OwnedBooks,
        ownership: Ownership,
        stats: DispatchStats,
        outage: Outage,
    ) -> None:
        self._store = store
        self._books = books
        self._ownership = ownership
        self._stats = stats
        self._outage = outage

    def load(self, tp: TP) -> Pending:
        """What the store holds for ``tp`` that is not settled."""
        return self._store.pending(tp)

    def settle(self, tps: Sequence[TP]) -> None:
        rounds: dict[TP, Settlement] = {}
        for tp in tps:
            settlement = self._books[tp].settlement()
            if settlement is not None:
                rounds[tp] = settlement
        if not rounds:
            return
        crash_point("after_dispatch")
        try:
            fenced = self._store.settle(rounds)
        except CheckpointError:
            self._stats.store_ok = False
            raise
        self._stats.store_ok = True
        self._outage.ok()
        for tp, settlement in rounds.items():
            if tp in fenced:
                self._books.drop(tp, "its settlement was refused")
            else:
                self._books[tp].settled(settlement)

    def verify(self) -> None:
        """Read the owner epochs back from the store; drop (and mark fenced) each
        partition whose epoch there is not the one this instance holds."""
        if not self._books:
            return
        try:
            current = self._store.epochs(self._books)
        except CheckpointError:
            self._stats.store_ok = False
            raise
        self._stats.store_ok = True
        held = self._ownership.epochs()
        for tp in list(self._books):
            if current.get(tp) != held.get(tp):
                self._books.drop(tp, "its owner epoch moved on")

    def adopt_retries(self, now: float) -> None:
        """Take in the retries that tools put back (``dlq replay``, ``replay``)."""
        if not self._books:
            return
        rows = self._store.due_retries(self._books, now)
        by_tp: dict[TP, list[Parked]] = {}
        for row in rows:
            by_tp.setdefault(row.tp, []).append(row)
        for tp, found in by_tp.items():
            book = self._books.get(tp)
            if book is not None:
                self._books.pending += book.adopt(found)
