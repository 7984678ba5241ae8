"""Event listeners: Event, EventListener and the Kafka, timer and HTTP listeners."""

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
]
