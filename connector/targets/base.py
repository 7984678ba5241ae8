"""The target contract (docs/architecture.md, "Targets"): where actions go.

Every target receives each action with its idempotency key (the action id). Delivery is
at-least-once: after a crash the same action is delivered again with the same id, so a
target that honours idempotency keys applies it once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from kec.action import Action
from kec.resource import Resource


class Target(Resource, abc.ABC):
    """A destination for actions. ``open()`` before use; ``close()`` is idempotent.

    The dispatcher calls :meth:`deliver_many` from up to ``concurrency`` threads at once,
    with up to ``batch_size`` actions a call. Actions of one (target, key) lane are never
    handed out before the previous one is answered, unless the target is ``ordered``:
    then one call may hold several actions of a lane, in their order, and the target
    applies them in that order (a Kafka producer with idempotence, one write to a file).
    Actions of different lanes are independent: their order does not matter.
    """

    name: str
    concurrency: int = 1  # calls of deliver_many in flight at once
    batch_size: int = 1  # actions per call
    ordered: bool = False  # one call applies its actions in their order

    @abc.abstractmethod
    def deliver(self, action: Action) -> None:
        """Deliver one action; raise TargetError (retriable) or TargetRejected (final)."""

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
