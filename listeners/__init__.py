"""Event listeners: Event, EventListener, the Kafka, timer and HTTP listeners, and
``wait_for_event``, the durable event step they run in (design §8)."""

from typing import Any

from listeners.base import EventListener
from listeners.event import Event
from listeners.http import HTTPListener
from listeners.kafka import QueueEventListener, configure
from listeners.timer import TimerListener

__all__ = [
    "Event",
    "EventListener",
    "HTTPListener",
    "QueueEventListener",
    "TimerListener",
    "configure",
    "wait_for_event",
]


def __getattr__(name: str) -> Any:
    # Resolved on first use: the durable step (connector.durable) needs the checkpoint
    # store contract, which itself imports listeners.event.
    if name == "wait_for_event":
        from connector.durable import wait_for_event

        return wait_for_event
    raise AttributeError(f"module 'listeners' has no attribute {name!r}")
