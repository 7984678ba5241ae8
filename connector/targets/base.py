"""The target contract (docs/architecture.md, "Targets"): where actions go.

Every target receives each action with its idempotency key (the action id). Delivery is
at-least-once: after a crash the same action is delivered again with the same id, so a
target that honours idempotency keys applies it once.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kec.action import Action
from kec.resource import Resource


@dataclass(frozen=True, slots=True)
class FlowLimits:
    """How fast the dispatcher may hand actions to one target (a config's
    ``max_in_flight`` and ``rate``); the defaults limit nothing beyond ``concurrency``.

    ``max_in_flight``: actions handed to the target and not answered yet, across all its
    calls, never above this (``concurrency`` bounds the calls, ``batch_size`` the actions
    a call). ``per_second``/``burst``: a token bucket, one token an action, refilled at
    ``per_second`` up to ``burst``; ``per_key``: one bucket per event key of the target
    instead of one for the target. Actions held back wait in the outbox, counted as
    pending (backpressure)."""

    max_in_flight: int | None = None
    per_second: float | None = None
    burst: float | None = None  # None: max(1, per_second)
    per_key: bool = False

    @property
    def capacity(self) -> float:
        """The bucket's size in tokens (meaningless without ``per_second``)."""
        if self.burst is not None:
            return self.burst
        return max(1.0, self.per_second or 1.0)


class Target(Resource, abc.ABC):
    """A destination for actions. ``open()`` before use; ``close()`` is idempotent.

    The dispatcher calls :meth:`deliver_many` from up to ``concurrency`` threads at once,
    with up to ``batch_size`` actions a call. Actions of one (target, key) lane are never
    handed out before the previous one is answered, unless the target is ``ordered``:
    then one call may hold several actions of a lane, in their order, and the target
    applies them in that order (a Kafka producer with idempotence, one write to a file).
    Actions of different lanes are independent: their order does not matter.

    An ``asynchronous`` target answers a call without holding a thread for it
    (:meth:`deliver_async`): the dispatcher then keeps up to ``concurrency * batch_size``
    actions in flight, in calls of up to ``batch_size``, however many calls that takes,
    and its ``concurrency`` threads only try again, in place, what failed transiently.
    """

    name: str
    concurrency: int = 1  # calls of deliver_many in flight at once
    batch_size: int = 1  # actions per call
    ordered: bool = False  # one call applies its actions in their order
    asynchronous: bool = False  # deliver_async answers from a thread of the target's own
    flow: FlowLimits = FlowLimits()  # the dispatcher's limits (build_target sets them)

    @abc.abstractmethod
    def deliver(self, action: Action) -> None:
        """Deliver one action; raise TargetError (retriable) or TargetRejected (final)."""

    def deliver_async(
        self, actions: Sequence[Action], done: Callable[[dict[str, BaseException]], None]
    ) -> None:
        """:meth:`deliver_many` without waiting, for an ``asynchronous`` target: ``done``
        gets the failures once, from any thread; raising instead means none was sent."""
        raise NotImplementedError(f"target {self.name} is not asynchronous")

    def deliver_many(self, actions: Sequence[Action]) -> dict[str, BaseException]:
        """Deliver actions of different lanes; return the failures by action id (empty:
        all delivered). Each action's outcome is its own."""
        failures: dict[str, BaseException] = {}
        for action in actions:
            try:
                self.deliver(action)
            except Exception as exc:
                failures[action.action_id] = exc
        return failures
