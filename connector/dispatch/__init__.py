"""Step 4 of the protocol: the owner of a partition delivers the actions born from it.

The pipeline hands each checkpointed batch's actions to the :class:`Dispatcher` in
memory (:meth:`Dispatcher.queue`); the store is read only when a partition is assigned
(:meth:`Dispatcher.adopt`) and, once a second, for retries that tools put back
(``dlq replay``, ``replay``). The package, one module per job:

* :mod:`~connector.dispatch.dispatcher`: :class:`Dispatcher`, the coordinator thread
  that runs the rounds, and the calls the pipeline makes;
* :mod:`~connector.dispatch.books`: :class:`~connector.dispatch.books.OwnedBooks`, the
  partitions this instance dispatches, each with its book, and the count of actions
  not settled (backpressure); which partitions it owns, at which epoch, is the
  :class:`~connector.common.ownership.Ownership` registry it shares with the pipeline;
* :mod:`~connector.dispatch.lanes`: one partition's book: lanes per (target, key),
  watermark, parked rows (pure);
* :mod:`~connector.dispatch.schedule`: which lane heads go out now, as far as the
  targets have room;
* :mod:`~connector.dispatch.delivery`: each target's worker threads, the cap on its
  actions in flight (``max_in_flight``) and the retries in place of a transient failure;
* :mod:`~connector.dispatch.flow`: the targets' rate limits (token buckets, per target
  or key) and the time each was held back;
* :mod:`~connector.dispatch.outcomes`: a target's answers recorded in the books
  (delivered, to retry, dead) and the dispatcher's counters;
* :mod:`~connector.dispatch.settlement`: the dispatcher's side of the store: loads,
  settlements fenced by epoch, the epochs read back, retries put back by tools.
"""

from __future__ import annotations

from connector.dispatch.dispatcher import Dispatcher
from connector.dispatch.outcomes import DispatchStats

__all__ = ["DispatchStats", "Dispatcher"]
