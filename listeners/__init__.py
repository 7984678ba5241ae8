"""Event listeners: Event, EventListener, the Kafka, timer and HTTP listeners, and
``wait_for_event``, the durable event step they run in (docs/architecture.md)."""

from kec.event import Event
from listeners.base import EventListener
from listeners.durable import wait_for_event
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
