"""``wait_for_event``: an event listener as a durable step (Ray's API; docs/architecture.md).

A step is named by its ``step_id`` (unique within the store: e.g.
``"<workflow id>/<step name>"``) and its result is the :class:`~kec.event.Event`
that the listener returned the first time the step ran to its checkpoint. Running the
step again, in this or another process, returns that same event, so a workflow that is
re-run after a crash sees the same events as before.

The store is passed as ``store=``, or set once per process with :func:`configure`::

    from listeners import durable
    from listeners import TimerListener

    durable.configure(store=store)  # an opened CheckpointStore
    first, second = await asyncio.gather(
        durable.wait_for_event(TimerListener, time.time() + 60, step_id="wf-1/t60"),
        durable.wait_for_event(TimerListener, time.time() + 30, step_id="wf-1/t30"),
    )

Several ``wait_for_event`` awaited together (``asyncio.gather``) all must arrive: each is
its own step, polled concurrently. ``step_id`` and ``store`` are this function's keyword
arguments, so a listener's ``poll_for_event`` cannot take arguments of those names.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from checkpoint.base import StepStore
from kec.errors import ConfigError
from kec.event import Event
from kec.faults import crash_point
from listeners.base import EventListener

__all__ = ["configure", "default_store", "reset_configuration", "wait_for_event"]

log = logging.getLogger(__name__)

_default_store: StepStore | None = None


def configure(*, store: StepStore) -> None:
    """Make ``store`` (opened by the caller, who also closes it) the default of this process."""
    if not isinstance(store, StepStore):
        raise TypeError(
            "store must be a StepStore (a CheckpointStore from checkpoint.open_store), "
            f"not {type(store).__name__}"
        )
    global _default_store
    _default_store = store


def reset_configuration() -> None:
    """Forget the default store set by :func:`configure`."""
    global _default_store
    _default_store = None


def default_store() -> StepStore:
    """The store set by :func:`configure`; :class:`ConfigError` when there is none."""
    if _default_store is None:
        raise ConfigError(
            "wait_for_event has no checkpoint store: pass store=... or call "
            "listeners.durable.configure(store=...) first"
        )
    return _default_store


def _check_listener_type(listener_type: Any) -> type[EventListener]:
    if not (inspect.isclass(listener_type) and issubclass(listener_type, EventListener)):
        raise TypeError(
            f"wait_for_event needs an EventListener subclass (the class, not an instance), "
            f"got {listener_type!r}"
        )
    return listener_type


async def wait_for_event(
    listener_type: type[EventListener],
    *args: Any,
    step_id: str,
    store: StepStore | None = None,
    **kwargs: Any,
) -> Event:
    """Run ``listener_type`` as the durable step ``step_id`` and return its event.

    ``args`` and ``kwargs`` go to ``poll_for_event``. The protocol:

    1. If the store already holds the step's event (an earlier run checkpointed it): build
       a fresh ``listener_type()``, call ``event_checkpointed(event)`` on it again (the
       earlier run may have died before doing so; listeners make it harmless) and return
       the stored event. Nothing is polled.
    2. Otherwise build a fresh ``listener_type()`` and ``await poll_for_event(*args,
       **kwargs)``.
    3. Record the event durably with ``store.put_step(step_id, event)``. The first writer
       wins: if another run stored the step meanwhile, its event is the result, and the
       one just polled stays unacknowledged at its source (it is delivered again later).
    4. Crash point ``before_event_checkpointed`` (chaos tests): the step is stored, the
       source is not yet told.
    5. Build another fresh ``listener_type()``, call ``event_checkpointed(stored)`` on it
       (now the source may forget the event, e.g. a Kafka offset is committed) and
       return the stored event.

    Raises :class:`TypeError` when ``listener_type`` is not an :class:`EventListener`
    subclass, :class:`~kec.errors.ConfigError` without a store, whatever the
    listener raises, and :class:`~kec.errors.CheckpointError` when the store fails
    (then nothing was acknowledged and running the step again is safe).
    """
    listener_cls = _check_listener_type(listener_type)
    if not isinstance(step_id, str) or not step_id:
        raise ValueError(f"step_id must be a non-empty string, not {step_id!r}")
    target = store if store is not None else default_store()

    # Off the event loop (the store is synchronous), with the steps awaited together read
    # in one query (StepStore.get_step_async).
    stored = await target.get_step_async(step_id)
    if stored is not None:
        log.debug("step %s: resumed from its checkpoint (event %s)", step_id, stored.event_id)
        await listener_cls().event_checkpointed(stored)
        return stored

    event = await listener_cls().poll_for_event(*args, **kwargs)
    if not isinstance(event, Event):
        raise TypeError(
            f"{listener_cls.__name__}.poll_for_event returned {type(event).__name__}, not an Event"
        )
    stored = await target.put_step_async(step_id, event)
    if stored.event_id != event.event_id:
        log.warning(
            "step %s was checkpointed by another run meanwhile (event %s); event %s that "
            "this run polled is left unacknowledged",
            step_id,
            stored.event_id,
            event.event_id,
        )
    crash_point("before_event_checkpointed")
    await listener_cls().event_checkpointed(stored)
    return stored
