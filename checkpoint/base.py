"""The checkpoint store contract (docs/architecture.md, "The checkpoint store").

One interface, three backends that pass the same contract tests: ``memory`` (tests),
``sqlite`` (embedded default) and ``postgres`` (shared by several instances).

The store is the source of truth for exactly-once: a batch is one durable transaction
(:meth:`CheckpointStore.batch`) that inserts the new events, the actions the rules derived
from them, the rules' state and each partition's next offset. Only after that transaction
is committed (with a real fsync) may the Kafka offset be committed.

Writes of a batch::

    with store.batch() as tx:              # BEGIN
        new = tx.insert_events(events)     # ids already stored are skipped
        state = tx.get_rule_state(k)       # multi-event rule state, read in the tx
        tx.put_rule_state(k, v)
        tx.add_actions(actions)            # outbox, state "pending"
        tx.set_next_offsets(offsets, epochs)  # raises Fenced if an epoch is stale
                                           # COMMIT (durable) on leaving the block;
                                           # ROLLBACK if the block raised

Partition ownership (fencing): :meth:`claim_partitions` bumps and returns each partition's
owner epoch. A batch carries the epochs it was read under; if another instance claimed the
partition since, the batch raises :class:`~kec.errors.Fenced` and nothing is written.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType

from kec.action import Action
from kec.event import Event

SCHEMA_VERSION = 2

TopicPartition = tuple[str, int]


class ActionState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An action in the outbox with its delivery bookkeeping."""

    seq: int  # insertion order: dispatch follows it, so per-key order is kept
    action: Action
    state: ActionState
    attempts: int
    next_attempt_at: float  # epoch seconds; pending actions are due when this has passed
    last_error: str | None


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A Kafka record that could not become an event (it also went to the DLQ topic)."""

    topic: str
    partition: int
    offset: int
    error: str
    error_class: str
    key: bytes | None
    value: bytes | None


class BatchTransaction(abc.ABC):
    """The writes of one batch; see the module docstring for the order."""

    @abc.abstractmethod
    def insert_events(self, events: Sequence[Event]) -> list[Event]:
        """Insert events whose id is not stored yet; return those, in input order.

        Ids repeated within ``events`` count once (the first occurrence wins).
        """

    @abc.abstractmethod
    def get_rule_state(self, key: str) -> str | None:
        """The stored state of a multi-event rule (opaque text, JSON by convention)."""

    @abc.abstractmethod
    def put_rule_state(self, key: str, value: str | None) -> None:
        """Store (or with ``None`` delete) a multi-event rule state."""

    @abc.abstractmethod
    def add_actions(self, actions: Sequence[Action]) -> None:
        """Queue actions in the outbox (state pending); an id already present is skipped."""

    @abc.abstractmethod
    def add_dead_records(self, records: Sequence[DeadRecord]) -> None:
        """Record undecodable records (already sent to the dead-letter topic)."""

    @abc.abstractmethod
    def set_next_offsets(
        self,
        offsets: Mapping[TopicPartition, int],
        epochs: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        """Record each partition's next offset; never moves one backwards.

        With ``epochs``, every named partition's current owner epoch must equal the given
        one, else :class:`~kec.errors.Fenced` is raised (and the batch rolls back).
        """


class CheckpointStore(abc.ABC):
    """A durable store of events, offsets, outbox, rule state and durable steps."""

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, create or migrate the schema; refuse a corrupt or newer store."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; idempotent."""

    def __enter__(self) -> CheckpointStore:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the batch ---------------------------------------------------------------------

    @abc.abstractmethod
    def batch(self) -> AbstractContextManager[BatchTransaction]:
        """One durable transaction; committed with fsync when the block exits cleanly."""

    # -- offsets and ownership -----------------------------------------------------------

    @abc.abstractmethod
    def next_offsets(self, topic: str | None = None) -> dict[TopicPartition, int]:
        """The next offset to read per partition (all topics, or one)."""

    @abc.abstractmethod
    def claim_partitions(
        self, owner: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Become the owner of ``partitions``: bump and return their epochs."""

    # -- events --------------------------------------------------------------------------

    @abc.abstractmethod
    def get_event(self, event_id: str) -> Event | None: ...

    @abc.abstractmethod
    def count_events(self) -> int: ...

    @abc.abstractmethod
    def iter_events(self) -> Iterator[Event]:
        """Every stored event in the order it was checkpointed."""

    # -- outbox --------------------------------------------------------------------------

    @abc.abstractmethod
    def due_actions(self, now: float, limit: int) -> list[OutboxEntry]:
        """Pending actions whose ``next_attempt_at`` has passed, in ``seq`` order."""

    @abc.abstractmethod
    def count_actions(self, state: ActionState) -> int: ...

    @abc.abstractmethod
    def count_actions_by_rule(self) -> dict[str, int]:
        """How many actions each rule queued, whatever their state (for ``status``)."""

    @abc.abstractmethod
    def mark_done(self, action_ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def mark_retry(self, action_id: str, next_attempt_at: float, error: str) -> None:
        """Count a failed attempt and schedule the next one."""

    @abc.abstractmethod
    def mark_dead(self, action_id: str, error: str) -> None:
        """Move an action to the dead-letter table after its last attempt."""

    @abc.abstractmethod
    def list_actions(self, state: ActionState, limit: int = 1000) -> list[OutboxEntry]: ...

    @abc.abstractmethod
    def replay_dead(self, action_ids: Sequence[str] | None = None) -> int:
        """Put dead actions (all, or the named ones) back to pending; return how many."""

    @abc.abstractmethod
    def list_dead_records(self, limit: int = 1000) -> list[DeadRecord]: ...

    # -- retention -----------------------------------------------------------------------

    @abc.abstractmethod
    def prune(self, before: float, limit: int = 10_000) -> int:
        """Delete up to ``limit`` events checkpointed before ``before`` (epoch seconds) and
        up to ``limit`` *done* actions queued before it; return how many rows went.

        Oldest first, in the order they were stored; one short transaction per call, so
        call it until it returns less than ``limit``. Pending and dead actions, dead
        records, rule state, offsets and durable steps are never pruned. A pruned event
        is no longer deduplicated: a resend of its id, or a ``replay`` of its offset, is
        processed again (see :mod:`connector.retention`).
        """

    # -- durable steps (wait_for_event) --------------------------------------------------

    @abc.abstractmethod
    def get_step(self, step_id: str) -> Event | None:
        """The event a durable ``wait_for_event`` step already returned, if any."""

    @abc.abstractmethod
    def put_step(self, step_id: str, event: Event) -> Event:
        """Record a step's event durably; if one is already stored, keep and return it."""
