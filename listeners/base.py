"""The event listener contract of Ray Workflows (docs/architecture.md, "The listener contract").

A listener turns "wait until something happens" into a coroutine that returns an
:class:`~kec.event.Event`. ``wait_for_event(ListenerType, *args, **kwargs)`` drives
it as a durable step:

1. ``ListenerType()`` — a new instance, built with no arguments;
2. ``await listener.poll_for_event(*args, **kwargs)`` — returns once the event is there;
3. the step's result (the event) is checkpointed durably;
4. ``await ListenerType().event_checkpointed(event)`` — now the source may forget the
   event (commit a Kafka offset, ack a message, ...). After a crash between 3 and 4 the
   step is resumed from its checkpoint and step 4 runs again, so it must be idempotent.
"""

from __future__ import annotations

import abc
from typing import Any

from kec.event import Event


class EventListener(abc.ABC):
    """Base class of event listeners, with Ray's contract.

    * The constructor takes no arguments (it is the only one ever called) and does no
      I/O; whatever a listener needs to find its source comes from configuration.
    * Listeners are stateless: :meth:`poll_for_event` and :meth:`event_checkpointed` may
      run on different instances, even in different processes, and an instance is never
      serialized (only the class is). So the returned Event carries everything
      :meth:`event_checkpointed` needs.
    * :meth:`event_checkpointed` may be called more than once for the same event (after a
      crash) and must then do no harm.
    """

    @abc.abstractmethod
    async def poll_for_event(self, *args: Any, **kwargs: Any) -> Event:
        """Wait for the event and return it; return only when it has been received."""

    async def event_checkpointed(self, event: Event) -> None:  # noqa: B027 - optional hook
        """Called once ``event`` is durably checkpointed: the source may now forget it.

        Optional; the default does nothing (for sources without acknowledgement).
        """
