"""An outage in few lines (connector.common.outage): one when it begins, one now and then, one
when it ends; an injected clock, so no waiting."""

from __future__ import annotations

import logging

import pytest

from connector.common.outage import Outage, cause_of
from kec.errors import CheckpointError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_one_line_when_it_begins_one_every_interval_and_one_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    outage = Outage("checkpoint store", logging.getLogger("t"), every=30, clock=clock)
    caplog.set_level(logging.INFO, logger="t")
    error = CheckpointError("postgres store: committing a batch failed: connection refused")
    for _ in range(50):  # a failure every second for 50 s
        outage.failed(error, retry_in=1.0)
        clock.now += 1
    assert outage.down and outage.failures == 50
    outage.ok()
    outage.ok()  # up already: nothing more to say
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert lines[0].startswith("checkpoint store unavailable: CheckpointError: postgres store")
    assert "still unavailable after 30s (31 failed attempts)" in lines[1]
    assert lines[2] == "checkpoint store is back after 50.0s (50 failed attempts)"
    assert not outage.down and outage.failures == 0


def test_the_cause_names_the_root_error_once() -> None:
    error = CheckpointError("postgres store: connecting failed")
    error.__cause__ = OSError("Connection refused")
    assert cause_of(error) == (
        "CheckpointError: postgres store: connecting failed (OSError: Connection refused)"
    )
    assert cause_of(ValueError("")) == "ValueError"
