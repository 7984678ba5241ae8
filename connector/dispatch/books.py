"""The partitions a dispatcher delivers for: one :class:`~connector.dispatch.lanes.PartitionBook`
each, and how many of their actions are not settled yet.

Whether this instance owns a partition, and at which epoch, is not kept here: that is
:class:`~connector.common.ownership.Ownership`, shared with the pipeline. A book is the
delivery state of one claim (its epoch is the claim the book was loaded under, which
the store checks when it is settled); dropping a book because another instance claimed
the partition marks it fenced there, and the pipeline stops reading it.

Touched by the coordinator thread only; :attr:`OwnedBooks.pending` is read by others
(the pipeline's backpressure, metrics), which is why it is a counter kept in step rather
than a sum over the books.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from connector.common.ownership import Ownership
from connector.dispatch.lanes import PartitionBook
from kec.event import TP

log = logging.getLogger(__name__)


class OwnedBooks:
    """The partitions this instance dispatches, each with its book (see
    :mod:`connector.dispatch.dispatcher`, *Ownership*)."""

    def __init__(self, ownership: Ownership) -> None:
        self._ownership = ownership
        self._books: dict[TP, PartitionBook] = {}
        self.pending = 0  # actions not settled, all books

    def __bool__(self) -> bool:
        return bool(self._books)

    def __contains__(self, tp: object) -> bool:
        return tp in self._books

    def __iter__(self) -> Iterator[TP]:
        return iter(self._books)

    def get(self, tp: TP) -> PartitionBook | None:
        return self._books.get(tp)

    def __getitem__(self, tp: TP) -> PartitionBook:
        return self._books[tp]

    def books(self) -> list[PartitionBook]:
        return list(self._books.values())

    def holds(self, book: PartitionBook) -> bool:
        """Whether ``book`` is still the one of its partition (not dropped or replaced)."""
        return self._books.get(book.tp) is book

    def put(self, book: PartitionBook) -> None:
        """Own ``book``'s partition, replacing the book it had (a claim again)."""
        self.forget(book.tp)
        self._books[book.tp] = book
        self.pending += book.size

    def forget(self, tp: TP) -> PartitionBook | None:
        """Stop dispatching ``tp``; its actions not settled stay in the store."""
        book = self._books.pop(tp, None)
        if book is not None:
            self.pending -= book.size
        return book

    def drop(self, tp: TP, why: str) -> None:
        """Forget ``tp`` because another instance owns it now, and mark the claim of its
        book fenced in the ownership registry: news for the pipeline, which stops
        reading it at its next batch."""
        book = self.forget(tp)
        if book is not None:
            self._ownership.fence(tp, why, epoch=book.epoch, news=True)
            log.warning(
                "%s[%d]: another instance owns it now (%s); this one stops dispatching it",
                tp[0], tp[1], why,
            )  # fmt: skip
