"""The target contract (docs/architecture.md, "Targets"): where actions go.

Every target receives each action with its idempotency key (the action id). Delivery is
at-least-once: after a crash the same action is delivered again with the same id, so a
target that honours idempotency keys applies it once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

from kec.action import Action
from kec.errors import TargetError


class Target(abc.ABC):
    """A destination for actions. ``open()`` before use; ``close()`` is idempotent."""

    name: str

    def open(self) -> None:  # noqa: B027 - most targets need no set-up
        """Acquire resources (files, sockets, clients)."""

    def close(self) -> None:  # noqa: B027
        """Release resources; idempotent."""

    @abc.abstractmethod
    def deliver(self, action: Action) -> None:
        """Deliver one action; raise TargetError (retriable) or TargetRejected (final)."""

    def deliver_many(self, actions: Sequence[Action]) -> dict[str, Exception]:
        """Deliver a batch in order; return the failures by action id (empty: all done).

        A rejection (final) concerns that action only, so the batch goes on. A transient
        failure stops the batch, so later actions are not applied before an earlier one;
        the untried rest is reported with that same (retriable) error.
        """
        failures: dict[str, Exception] = {}
        for i, action in enumerate(actions):
            try:
                self.deliver(action)
            except TargetError as exc:
                if not exc.retriable:
                    failures[action.action_id] = exc
                    continue
                failures.update((a.action_id, exc) for a in actions[i:])
                break
            except Exception as exc:
                failures.update((a.action_id, exc) for a in actions[i:])
                break
        return failures

    def __enter__(self) -> Target:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
