"""Event listeners: Event, EventListener and the Kafka, timer and HTTP listeners."""

from listeners.base import EventListener
from listeners.event import Event
from listeners.kafka import QueueEventListener, configure

__all__ = ["Event", "EventListener", "QueueEventListener", "configure"]
