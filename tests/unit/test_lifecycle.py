"""connector.lifecycle: services stopped in reverse order, a failing stop logged with its
name and the rest stopped all the same, the failures reported once at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from connector.lifecycle import Services, ShutdownError


class Recorder:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    def stop(self, name: str, *, fail: bool = False) -> Callable[[], None]:
        def stop() -> None:
            self.stopped.append(name)
            if fail:
                raise OSError(f"{name} would not close")

        return stop


def test_services_stop_in_reverse_order_of_starting() -> None:
    seen = Recorder()
    services = Services()
    for name in ("store", "target a", "dispatcher", "pipeline"):
        services.push(name, seen.stop(name))
    assert services.names == ("store", "target a", "dispatcher", "pipeline")
    services.close()
    assert seen.stopped == ["pipeline", "dispatcher", "target a", "store"]
    assert services.names == ()
    services.close()  # each stop runs once
    assert seen.stopped == ["pipeline", "dispatcher", "target a", "store"]


def test_a_failing_stop_in_the_middle_is_logged_by_name_and_the_rest_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = Recorder()
    services = Services()
    services.push("store", seen.stop("store"))
    services.push("target webhook", seen.stop("target webhook"))
    services.push("target fragile", seen.stop("target fragile", fail=True))
    services.push("dispatcher", seen.stop("dispatcher"))
    caplog.set_level(logging.DEBUG, logger="connector.lifecycle")
    with pytest.raises(ShutdownError) as raised:
        services.close()
    assert seen.stopped == ["dispatcher", "target fragile", "target webhook", "store"]
    assert raised.value.failed == ("target fragile",)
    assert "target fragile" in str(raised.value)
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "stopping target fragile failed; stopping the others"
    assert record.exc_info is not None and "would not close" in str(record.exc_info[1])
    assert [r.getMessage() for r in caplog.records] == [
        "stopped dispatcher",
        "stopping target fragile failed; stopping the others",
        "stopped target webhook",
        "stopped store",
    ]


def test_every_failure_is_reported_once_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    seen = Recorder()
    services = Services()
    for name in ("a", "b", "c"):
        services.push(name, seen.stop(name, fail=name != "b"))
    caplog.set_level(logging.ERROR, logger="connector.lifecycle")
    with pytest.raises(ShutdownError) as raised:
        services.close()
    assert seen.stopped == ["c", "b", "a"]
    assert raised.value.failed == ("c", "a")
    assert [r.getMessage().split()[1] for r in caplog.records] == ["c", "a"]


def test_the_runs_own_error_propagates_and_failed_stops_stay_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = Recorder()
    caplog.set_level(logging.ERROR, logger="connector.lifecycle")

    def run() -> None:
        with Services() as services:
            services.push("store", seen.stop("store"))
            services.push("target t", seen.stop("target t", fail=True))
            raise RuntimeError("the pipeline died")

    with pytest.raises(RuntimeError, match="the pipeline died"):
        run()
    assert seen.stopped == ["target t", "store"]
    assert [r.getMessage() for r in caplog.records] == [
        "stopping target t failed; stopping the others"
    ]


def test_leaving_the_block_normally_raises_for_a_failed_stop() -> None:
    seen = Recorder()

    def run() -> None:
        with Services() as services:
            services.push("store", seen.stop("store", fail=True))

    with pytest.raises(ShutdownError):
        run()
    assert seen.stopped == ["store"]
