"""TimerListener on an injected clock, and wait_for_event's durable-step protocol on it."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from checkpoint import open_store
from checkpoint.base import CheckpointStore
from kec.errors import ConfigError
from listeners import Event, EventListener, TimerListener, durable
from listeners.timer import ManualClock, SystemClock, get_clock, set_clock

T0 = 1_800_000_000.0


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    manual = ManualClock(T0)
    previous = set_clock(manual)
    yield manual
    set_clock(previous)


@pytest.fixture
def store() -> Iterator[CheckpointStore]:
    with open_store("memory://") as opened:
        yield opened


async def armed(clock: ManualClock, count: int) -> None:
    """Wait (bounded, without moving the clock) until ``count`` timers sleep on it."""
    async with asyncio.timeout(5):
        while True:
            if clock.sleepers >= count:
                return
            await asyncio.sleep(0)  # let the polling tasks run up to their sleep


async def test_fires_when_the_clock_reaches_the_timestamp(clock: ManualClock) -> None:
    poll = asyncio.create_task(TimerListener().poll_for_event(T0 + 60))
    await armed(clock, 1)
    clock.advance(59.5)
    await asyncio.sleep(0)
    assert not poll.done()
    clock.advance(0.5)
    event = await asyncio.wait_for(poll, 5)
    assert (event.key, event.event_type) == ("timer", "timer")
    assert event.json_value() == T0 + 60
    assert event.create_time == int((T0 + 60) * 1000)
    assert event.event_id == f"timer/{T0 + 60!r}"


async def test_a_past_timestamp_fires_at_once(clock: ManualClock) -> None:
    event = await TimerListener().poll_for_event(T0 - 10)
    assert event.json_value() == T0 - 10
    assert clock.sleepers == 0


async def test_the_same_timer_is_the_same_event(clock: ManualClock) -> None:
    first = await TimerListener().poll_for_event(T0)
    again = await TimerListener().poll_for_event(T0)
    assert first.event_id == again.event_id
    assert Event.from_json(first.to_json()) == first


async def test_event_checkpointed_is_a_no_op(clock: ManualClock) -> None:
    event = await TimerListener().poll_for_event(T0)
    # Nothing to acknowledge: the base class's no-op, harmless however often it runs.
    assert TimerListener.event_checkpointed is EventListener.event_checkpointed
    await TimerListener().event_checkpointed(event)
    await TimerListener().event_checkpointed(event)
    assert await TimerListener().poll_for_event(T0) == event


@pytest.mark.parametrize("bad", ["soon", None, True])
async def test_a_timestamp_that_is_not_a_number_is_a_type_error(bad: Any) -> None:
    with pytest.raises(TypeError, match="timestamp"):
        await TimerListener().poll_for_event(bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
async def test_a_timestamp_that_is_not_finite_is_a_value_error(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        await TimerListener().poll_for_event(bad)


async def test_a_cancelled_timer_leaves_no_sleeper(clock: ManualClock) -> None:
    poll = asyncio.create_task(TimerListener().poll_for_event(T0 + 5))
    await armed(clock, 1)
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert clock.sleepers == 0


def test_manual_clock_does_not_go_backwards() -> None:
    manual = ManualClock(T0)
    with pytest.raises(ValueError, match="backwards"):
        manual.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        manual.set(T0 - 1)
    assert manual.now() == T0


async def test_system_clock_fires_for_a_past_timestamp_without_sleeping() -> None:
    assert isinstance(get_clock(), SystemClock)
    real = SystemClock()
    before = real.now()
    await real.sleep_until(before - 1)
    assert real.now() >= before


# -- wait_for_event on timers (the store is memory://; sqlite and Kafka in integration) --


async def test_gathered_timer_steps_all_arrive(clock: ManualClock, store: CheckpointStore) -> None:
    both = asyncio.gather(
        durable.wait_for_event(TimerListener, T0 + 60, step_id="wf/t60", store=store),
        durable.wait_for_event(TimerListener, T0 + 30, step_id="wf/t30", store=store),
    )
    await armed(clock, 2)
    clock.advance(30)
    await armed(clock, 1)  # the 30 s timer fired; the gather still waits for the other
    assert not both.done()
    clock.advance(30)
    first, second = await asyncio.wait_for(both, 5)
    assert [first.json_value(), second.json_value()] == [T0 + 60, T0 + 30]
    assert store.get_step("wf/t60") == first
    assert store.get_step("wf/t30") == second


async def test_a_stored_step_is_returned_without_polling(
    clock: ManualClock, store: CheckpointStore
) -> None:
    first = await durable.wait_for_event(TimerListener, T0, step_id="s", store=store)
    # A later timestamp would sleep: the stored step must not poll at all.
    again = await durable.wait_for_event(TimerListener, T0 + 3600, step_id="s", store=store)
    assert again == first
    assert clock.sleepers == 0


class Recording(EventListener):
    """Records, at class level, what the durable step did with each fresh instance."""

    calls: list[tuple[str, int, str]] = []

    async def poll_for_event(self, value: str, *, key: str = "k") -> Event:
        self.calls.append(("poll", id(self), value))
        return Event(key=key, value=value)

    async def event_checkpointed(self, event: Event) -> None:
        self.calls.append(("checkpointed", id(self), event.text))


async def test_poll_and_checkpointed_run_on_fresh_instances_with_the_args(
    store: CheckpointStore,
) -> None:
    Recording.calls = []
    event = await durable.wait_for_event(Recording, "v1", key="kk", step_id="r", store=store)
    assert (event.key, event.value) == ("kk", "v1")
    (poll, done) = Recording.calls
    assert (poll[0], poll[2], done[0], done[2]) == ("poll", "v1", "checkpointed", "v1")
    # Resumed: no poll, event_checkpointed once more with the stored event.
    Recording.calls = []
    again = await durable.wait_for_event(Recording, "v2", step_id="r", store=store)
    assert again == event
    assert [(c[0], c[2]) for c in Recording.calls] == [("checkpointed", "v1")]


class Overtaken(Recording):
    """While it polls, another run of the same step checkpoints its own event first."""

    store: CheckpointStore | None = None

    async def poll_for_event(self, value: str, *, key: str = "k") -> Event:
        assert self.store is not None
        self.store.put_step("raced", Event(key=key, value="stored by another run"))
        return await super().poll_for_event(value, key=key)


async def test_the_first_writer_of_a_step_wins(store: CheckpointStore) -> None:
    Recording.calls = []
    Overtaken.store = store
    event = await durable.wait_for_event(Overtaken, "late", step_id="raced", store=store)
    assert event.value == "stored by another run"
    assert store.get_step("raced") == event
    # The polled event is not acknowledged: only the stored one is.
    assert [(c[0], c[2]) for c in Recording.calls] == [
        ("poll", "late"),
        ("checkpointed", "stored by another run"),
    ]


@pytest.mark.parametrize("bad", [TimerListener(), object, "TimerListener", dict])
async def test_a_non_listener_type_is_a_type_error(bad: Any, store: CheckpointStore) -> None:
    with pytest.raises(TypeError, match="EventListener subclass"):
        await durable.wait_for_event(bad, T0, step_id="x", store=store)


async def test_an_empty_step_id_is_refused(store: CheckpointStore) -> None:
    with pytest.raises(ValueError, match="step_id"):
        await durable.wait_for_event(TimerListener, T0, step_id="", store=store)


async def test_the_default_store_comes_from_configure(
    clock: ManualClock, store: CheckpointStore
) -> None:
    durable.reset_configuration()
    with pytest.raises(ConfigError, match="configure"):
        await durable.wait_for_event(TimerListener, T0, step_id="d")
    durable.configure(store=store)
    try:
        event = await durable.wait_for_event(TimerListener, T0, step_id="d")
    finally:
        durable.reset_configuration()
    assert store.get_step("d") == event
    assert json.loads(event.text) == T0


def test_configure_refuses_what_is_not_a_store() -> None:
    with pytest.raises(TypeError, match="CheckpointStore"):
        durable.configure(store="memory://")  # type: ignore[arg-type]
