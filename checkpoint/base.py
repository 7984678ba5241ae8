"""The checkpoint store contract: what the pipeline, the dispatcher and the tools need.

Split by role (see the end of this module): :class:`PipelineStore`, :class:`DispatchStore`,
:class:`OperationsStore` and :class:`StepStore`; :class:`CheckpointStore` is all four.

One implementation (:mod:`checkpoint.sql`) over three backends that pass the same contract
tests: ``memory`` (SQLite in memory, tests), ``sqlite`` (one file, the embedded default)
and ``postgres`` (shared by several instances). The backends differ in dialect only.

**Partitions and their owner.** Every Kafka partition the connector reads has one row:
its owner and owner *epoch*, the next offset to read, the next action number and the
delivery watermark. :meth:`CheckpointStore.claim` makes this instance the owner (the
epoch goes up) and says where the partition stands. Every write an owner makes about its
partition names the epoch it claimed; once another instance has claimed the partition,
those writes are refused (:class:`~kec.errors.Fenced`) and nothing of them is written.

**A batch** is one durable transaction (:meth:`CheckpointStore.batch`) with a constant
number of statements per partition, however many events it holds::

    with store.batch() as tx:                       # BEGIN
        new = tx.claim_event_ids(ids)               # explicit ids not seen before
        state = tx.read_rule_state(keys)            # locked for this transaction
        tx.write_rule_state(updates, expires)
        tx.add_dead_records(poison)
        tx.append(tp, epoch, first, next, events, actions)   # the batch's record and
                                                    # the partition's next offset and
                                                    # action numbers; Fenced if stale,
                                                    # OffsetConflict unless ``first`` is
                                                    # the stored next offset
                                                    # COMMIT (fsync) on leaving the block

**The store judges what is new.** A batch states the offset it starts at, and the store
accepts it only if that is the partition's stored next offset (any offset while none is
stored). A batch that did commit but whose caller never heard so (a connection reset
during ``COMMIT``, a failover) is refused when it is tried again
(:class:`~kec.errors.OffsetConflict`, naming the stored offset): its events, rule-state
changes and actions are applied once whatever the retries, and the caller catches up from
the store (:meth:`CheckpointStore.pending` has the batch's actions).

Events are kept as the batch's compact record, not one row each. An event without an
explicit id is identified by its offset: the partition's next offset says it was seen.
An event with an explicit id (``event-id`` header, HTTP ``Idempotency-Key``) is also
recorded under ``(namespace, id)``, so a resend under another offset is a duplicate.

**Actions** are numbered per partition (``aseq``) in the order the rules queued them, and
live in their batch's record. The owner delivers them and moves the partition's
*watermark*: every action below it is settled, and so is every action in the partition's
*settled spans* above it (delivered out of order). Actions that fail, or wait behind a
failing action of the same (target, key), get rows of their own (*parked*): ``retry``
(due at ``next_attempt_at``), ``held`` (behind the failing one) or ``dead``. The
watermark passes parked actions; :meth:`CheckpointStore.settle` writes a round's
watermark and parked rows in one fenced transaction.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from checkpoint.records import Encoded
from kec.action import Action
from kec.deadletter import Poison
from kec.event import TP, Event
from kec.resource import Resource

SCHEMA_VERSION = 5
STORED_BYTES = 65_536  # of a poison record's key and of its value kept in the store

EventKey = tuple[str, str]  # (namespace, explicit event id)


class ActionState(enum.StrEnum):
    """An action's state as the tools show it."""

    PENDING = "pending"  # not delivered yet (in its batch, or parked for a retry)
    DONE = "done"  # delivered
    DEAD = "dead"  # gave up: in the dead-letter table, replayable


class Parking(enum.StrEnum):
    """Why an action has a row of its own."""

    RETRY = "retry"  # failed; tried again at next_attempt_at
    HELD = "held"  # waits behind an earlier action of its (target, key)
    DEAD = "dead"  # gave up after its last attempt, or refused for good


@dataclass(frozen=True, slots=True)
class Claim:
    """Where a partition stands when this instance becomes its owner."""

    epoch: int
    next_offset: int | None  # None: nothing of this partition was ever checkpointed
    next_aseq: int  # the number the next action born from it gets
    watermark: int  # every action numbered below it is settled (delivered or parked)
    topic_id: str | None = None  # Kafka's id of the topic when it was last checkpointed
    stopped: str | None = None  # why it is stopped (offsets went backwards), if it is
    # How many times an operator reset it to lower offsets: records without an explicit
    # id are then known as ``topic/partition/offset@generation`` (their offsets were used).
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Queued:
    """An action with its place: the partition it was born from and its number there."""

    tp: TP
    aseq: int
    action: Action


@dataclass(frozen=True, slots=True)
class Parked:
    """An action with a row of its own (see :class:`Parking`)."""

    tp: TP
    aseq: int
    action: Action
    state: Parking
    attempts: int = 0
    next_attempt_at: float = 0.0  # epoch seconds
    last_error: str | None = None


Span = tuple[int, int]  # aseqs from the first up to (not including) the second


@dataclass(frozen=True, slots=True)
class Tried:
    """A delivery attempt the dispatcher reports for lineage: each failed one (retried in
    place, retried later or final) and the delivery that follows a failure; the store
    numbers them per action (:class:`Attempt`)."""

    aseq: int
    action_id: str
    target: str
    at: float  # epoch seconds
    outcome: str  # failed | dead | delivered
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """One dispatch round's writes for one partition (see :meth:`CheckpointStore.settle`).

    ``done`` lists the spans of actions above the watermark that are settled too
    (delivered out of order: other keys went faster): a new owner skips them.
    """

    epoch: int
    watermark: int
    park: Sequence[Parked] = ()  # rows to write (insert or replace)
    unpark: Sequence[int] = ()  # aseqs whose rows go: delivered at last
    done: Sequence[Span] = ()
    tried: Sequence[Tried] = ()  # attempts worth keeping for lineage (failures, and after)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt kept for lineage: a failure, or the delivery after one."""

    n: int  # the attempt's number for its action (1: the first)
    at: float  # epoch seconds
    target: str
    outcome: str  # failed | dead | delivered
    detail: str | None = None  # the error or the target's answer, trimmed


@dataclass(frozen=True, slots=True)
class ActionLineage:
    """What the store says about one action: its state, its recorded attempts, and the time
    of the first settle mark that covered it (None: not settled, or its mark was pruned)."""

    state: ActionState
    attempts: tuple[Attempt, ...] = ()
    settled_by: float | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class StoredBatch:
    """A checkpointed batch as lineage reads it: its events and the actions they made
    (action ``i`` has the number ``first_aseq + i`` in its partition)."""

    seq: int
    tp: TP
    first_offset: int
    next_offset: int
    first_aseq: int
    stored_at: float
    events: tuple[Event, ...]
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An action as the tools list it."""

    seq: int  # its number in its partition (aseq)
    action: Action
    state: ActionState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    tp: TP | None = None


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A Kafka record that could not become actions (it also went to the DLQ topic)."""

    topic: str
    partition: int
    offset: int
    error: str
    error_class: str
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, poison: Poison) -> DeadRecord:
        """The row for a poison record, its key and value capped at :data:`STORED_BYTES`."""
        p = poison
        key = p.key[:STORED_BYTES] if p.key is not None else None
        value = p.value[:STORED_BYTES] if p.value is not None else None
        return cls(p.topic, p.partition, p.offset, p.error, p.error_class, key, value)


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """A partition's row, for ``status``."""

    tp: TP
    owner: str
    epoch: int
    next_offset: int | None
    next_aseq: int
    watermark: int
    done: tuple[Span, ...] = ()
    event_time: int | None = None  # the newest record timestamp checkpointed (ms)
    topic_id: str | None = None
    stopped: str | None = None  # why it is stopped, until an operator resets it
    generation: int = 0  # resets so far (see Claim.generation)


@dataclass
class Pending:
    """What an owner must still deliver for a partition (:meth:`CheckpointStore.pending`)."""

    watermark: int = 0
    end: int = 0  # the partition's next action number
    queued: list[Queued] = field(default_factory=list)  # not settled and without a row
    parked: list[Parked] = field(default_factory=list)  # retry and held rows, by aseq


class BatchTransaction(abc.ABC):
    """The writes of one batch; see the module docstring for their order."""

    @abc.abstractmethod
    def claim_event_ids(self, events: Sequence[Event]) -> set[EventKey]:
        """Record the explicit ids of ``events`` (Kafka events: where they are); return
        the ``(namespace, id)`` pairs not recorded before this call."""

    @abc.abstractmethod
    def read_rule_state(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored multi-event rule states of ``keys`` (missing keys are absent).

        The keys stay locked until the transaction ends, so two instances updating one
        state (an ``all_of`` set whose keys live on several partitions) take turns.
        """

    @abc.abstractmethod
    def write_rule_state(
        self, updates: Mapping[str, str | None], expires: Mapping[str, float] | None = None
    ) -> None:
        """Store rule states (``None`` deletes); ``expires``: the *event time* (epoch
        seconds) after which a state can no longer complete (an ``all_of`` set past its
        window). Retention deletes it once every partition's event time has passed that
        (see :meth:`CheckpointStore.prune`), never by the wall clock."""

    @abc.abstractmethod
    def event_time_watermark(self, moving: Mapping[TP, int] | None = None) -> int:
        """The store's event-time watermark (ms): the least event time of its partitions,
        one never checkpointed counting as 0, as last committed, with the event times this
        transaction moves ``moving`` on to (``absence`` timeouts fire by it:
        docs/architecture.md, "Time-driven rules")."""

    @abc.abstractmethod
    def add_dead_records(self, records: Sequence[DeadRecord]) -> None:
        """Record poison records (already on the dead-letter topic)."""

    @abc.abstractmethod
    def append(
        self,
        tp: TP,
        epoch: int,
        first_offset: int,
        next_offset: int,
        events: Sequence[Event],
        actions: Sequence[Action],
        event_time: int | None = None,
        encoded: Encoded | None = None,
    ) -> int:
        """Store a partition's part of the batch; return the first action's number.

        ``events`` (the new ones, read from offsets ``first_offset`` up to
        ``next_offset``) become the batch's record with ``actions``, numbered from the
        partition's next action number on; the partition's next offset becomes
        ``next_offset``, and its event time ``event_time`` (ms: the newest record
        timestamp of the batch) unless it was later already. Raises
        :class:`~kec.errors.Fenced` if ``epoch`` is not the partition's current one and
        :class:`~kec.errors.OffsetConflict` if ``first_offset`` is not its stored next
        offset (when one is stored): the transaction then changes nothing.
        ``encoded``: the record encoded before the transaction, used when it is the
        record of exactly ``events`` and ``actions`` (:meth:`Encoded.of`).
        """


# -- the contract, split by who uses it -----------------------------------------------------
#
# Each role declares the methods of one kind of caller; every method is declared in exactly
# one role (tests/unit/test_store_roles.py). A consumer takes the narrowest role it needs,
# so its signature says what it may do to the store: the pipeline cannot settle, the
# dispatcher cannot append, the tools cannot claim. :class:`CheckpointStore` is all of them
# plus the life cycle; :mod:`checkpoint.sql` implements it.


class PartitionsView(abc.ABC):
    """Where each partition stands, as last committed: read by the pipeline and the tools."""

    @abc.abstractmethod
    def next_offsets(self, topic: str | None = None) -> dict[TP, int]:
        """The next offset to read per partition (all topics, or one)."""

    @abc.abstractmethod
    def partitions(self) -> list[PartitionInfo]:
        """Every partition's row, by topic and partition."""


class PipelineStore(PartitionsView):
    """The pipeline's part (the poll thread): claims, batches, what it learns of a partition."""

    @property
    def shared_write_lock(self) -> bool:
        """Whether other processes' writes wait for this store's transactions (one SQLite
        file opened by the processes of ``pipeline.processes: N``): the pipeline then
        keeps its transactions to the writes, at some CPU cost (step 2)."""
        return False

    @abc.abstractmethod
    def claim(self, owner: str, partitions: Iterable[TP]) -> dict[TP, Claim]:
        """Become the owner of ``partitions``: bump their epochs, say where they stand."""

    @abc.abstractmethod
    def batch(self) -> AbstractContextManager[BatchTransaction]:
        """One durable transaction; committed with fsync when the block exits cleanly."""

    @abc.abstractmethod
    def mark_partition(
        self,
        tp: TP,
        epoch: int,
        *,
        topic_id: str | None = None,
        stopped: str | None = None,
        event_time: int | None = None,
    ) -> bool:
        """The owner records what it learnt of a partition: Kafka's ``topic_id`` for it,
        that it ``stopped`` it (and why), or that its ``event_time`` moved on (ms; caught
        up with nothing to read: see :meth:`OperationsStore.prune`). ``None`` leaves a
        field as it is. Returns False (nothing written) if ``epoch`` is stale."""


class DispatchStore(abc.ABC):
    """The dispatcher's part (the owner of a partition delivers its actions)."""

    @abc.abstractmethod
    def pending(self, tp: TP) -> Pending:
        """The partition's actions still to deliver: its batches' actions from the
        watermark on that are neither in a settled span nor rows of their own, and its
        retry and held rows."""

    @abc.abstractmethod
    def settle(self, rounds: Mapping[TP, Settlement]) -> set[TP]:
        """Write each partition's watermark and parked rows, in one transaction; return
        the partitions whose epoch was stale (nothing of theirs was written)."""

    @abc.abstractmethod
    def due_retries(self, partitions: Iterable[TP], now: float, limit: int = 1000) -> list[Parked]:
        """Retry rows of ``partitions`` due at ``now`` (``dlq replay`` and ``replay`` put
        rows there for the owner to find), oldest first."""

    @abc.abstractmethod
    def epochs(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """The current owner epoch of each partition (an owner checks it is still one)."""


class StepStore(abc.ABC):
    """Durable ``wait_for_event`` steps (:mod:`listeners.durable`, the HTTP gateway)."""

    @abc.abstractmethod
    def get_step(self, step_id: str) -> Event | None:
        """The event a durable ``wait_for_event`` step already returned, if any."""

    @abc.abstractmethod
    def put_step(self, step_id: str, event: Event) -> Event:
        """Record a step's event durably; if one is already stored, keep and return it."""

    async def get_step_async(self, step_id: str) -> Event | None:
        """:meth:`get_step` for a caller on an event loop, which it does not block.
        This default runs it in a thread; a store that reads the steps asked for
        meanwhile with one query answers from its reader thread instead."""
        return await asyncio.to_thread(self.get_step, step_id)

    async def put_step_async(self, step_id: str, event: Event) -> Event:
        """:meth:`put_step` for a caller on an event loop, which it does not block.
        This default runs it in a thread; a store that groups steps into shared
        transactions answers from its writer instead."""
        return await asyncio.to_thread(self.put_step, step_id, event)


class OperationsStore(PartitionsView):
    """The tools' part (``status``, ``replay``, ``dlq``, ``partitions``), retention's and
    the readers' (the HTTP gateway): reads of events, actions and rule state, and the
    operator's writes."""

    @abc.abstractmethod
    def reset_partition(
        self, tp: TP, next_offset: int, topic_id: str | None, *, force: bool = False
    ) -> PartitionInfo:
        """An operator's decision for a stopped partition: read on from ``next_offset``
        (of the topic with ``topic_id``), keeping every batch and action the store holds;
        its generation goes up (the offsets from there on may have been used already).
        Refused (:class:`~kec.errors.CheckpointError`) unless the partition is stopped, or
        ``force``. Returns the partition's row as it was before."""

    # -- events --------------------------------------------------------------------------

    @abc.abstractmethod
    def get_event(self, event_id: str, namespace: str | None = None) -> Event | None:
        """The stored event with this id: ``topic/partition/offset``, or an explicit id
        (of ``namespace``; of any namespace when it is None)."""

    @abc.abstractmethod
    def count_events(self) -> int: ...

    @abc.abstractmethod
    def iter_events(self) -> Iterator[Event]:
        """Every stored event in the order it was checkpointed."""

    @abc.abstractmethod
    def read_rule_state(self, keys: Sequence[str]) -> dict[str, str]:
        """Rule states as last committed, without locking them (readers)."""

    @abc.abstractmethod
    def read_rule_state_range(
        self, prefix: str, limit: int, after: str | None = None
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` rule states whose keys start with ``prefix`` (and sort after
        ``after`` when given), by key in code-point order, as last committed and unlocked
        (the HTTP gateway's waiter queues: one row per queued event)."""

    # -- actions -------------------------------------------------------------------------

    @abc.abstractmethod
    def count_actions(self, state: ActionState) -> int: ...

    @abc.abstractmethod
    def count_actions_by_rule(self) -> dict[str, int]:
        """How many actions each rule queued, whatever their state."""

    @abc.abstractmethod
    def list_actions(self, state: ActionState, limit: int = 1000) -> list[OutboxEntry]: ...

    @abc.abstractmethod
    def replay_dead(self, action_ids: Sequence[str] | None = None) -> int:
        """Put dead actions (all, or the named ones) back as due retries; return how many."""

    @abc.abstractmethod
    def checkpointed_ids(self, tp: TP, first_offset: int, next_offset: int) -> dict[int, str]:
        """The event id each of ``tp``'s records from ``first_offset`` up to ``next_offset``
        was last checkpointed under, by offset (``topic/partition/offset@generation`` after
        an operator's reset), for the records whose batches are still kept."""

    @abc.abstractmethod
    def requeue(
        self, tp: TP, actions: Sequence[Action], first_offset: int, next_offset: int
    ) -> int:
        """Queue ``actions`` (derived again from ``tp``'s records ``first_offset`` up to
        ``next_offset``: ``replay``) for ``tp``'s owner as due retries, skipping ids the
        batches of those records or earlier replays queued; return how many were queued."""

    @abc.abstractmethod
    def list_dead_records(self, limit: int = 1000) -> list[DeadRecord]: ...

    # -- lineage (connector.ops.trace) ----------------------------------------------------

    @abc.abstractmethod
    def batch_at(self, tp: TP, offset: int) -> StoredBatch | None:
        """The checkpointed batch holding ``tp``'s record at ``offset``, if still kept."""

    @abc.abstractmethod
    def batch_of_action(self, tp: TP, aseq: int) -> StoredBatch | None:
        """The checkpointed batch that queued ``tp``'s action number ``aseq``, if kept."""

    @abc.abstractmethod
    def recent_batches(self, limit: int, before_seq: int | None = None) -> list[StoredBatch]:
        """Up to ``limit`` batches holding events, newest first (below ``before_seq``)."""

    @abc.abstractmethod
    def action_lineage(self, actions: Sequence[tuple[TP, int, str]]) -> dict[str, ActionLineage]:
        """For each ``(partition, aseq, action id)``: its state, the attempts recorded and
        when it was settled (see :class:`ActionLineage`), by action id."""

    @abc.abstractmethod
    def find_action(self, action_id: str, scan: int) -> tuple[TP, int] | None:
        """Where the action ``action_id`` is: its partition and number, looked up among
        the parked and attempted actions, else in the newest ``scan`` batches."""

    # -- retention -----------------------------------------------------------------------

    @abc.abstractmethod
    def prune(self, before: float, limit: int = 10_000, lateness: float = 300.0) -> int:
        """Delete up to ``limit`` rows of each kind older than ``before`` (epoch seconds);
        return how many went. Call until it returns 0. See :mod:`connector.ops.retention`.

        Rule states that expire (``write_rule_state``'s ``expires``) go once the store's
        *event-time watermark*, the least event time of its partitions (a partition never
        checkpointed counts as 0), is more than ``lateness`` seconds past their expiry:
        a lagging or restarted connector holds the watermark back, so nothing it would
        still complete is deleted."""


class CheckpointStore(PipelineStore, DispatchStore, OperationsStore, StepStore, Resource):
    lineage: bool = True
    """Whether :meth:`settle` also writes lineage (attempts, settle marks): ``run`` sets it
    from ``checkpoint.lineage``."""

    """Every role, and the life cycle: what a backend implements and the service opens."""

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, create or migrate the schema; refuse a corrupt, newer or too old store."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; idempotent."""
