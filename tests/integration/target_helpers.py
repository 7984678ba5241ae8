"""Functions the python target tests name as ``module:function``.

Resolved by import path like a user's hook, so they live in a module of their own. Calls
are recorded in ``RECEIVED``; the tests clear it before use.
"""

from __future__ import annotations

from kec.action import Action
from kec.errors import TargetError, TargetRejected

RECEIVED: list[Action] = []
NOT_CALLABLE = 42
REJECTION = TargetRejected("this action is not acceptable")


def record(action: Action) -> str:
    RECEIVED.append(action)
    return "ignored return value"


async def record_async(action: Action) -> None:
    RECEIVED.append(action)


def reject(action: Action) -> None:
    raise REJECTION


def busy(action: Action) -> None:
    raise TargetError("engine busy, try later")


def crash(action: Action) -> None:
    raise ValueError(f"cannot handle {action.event_key}")


class Handler:
    @staticmethod
    def handle(action: Action) -> None:
        RECEIVED.append(action)
