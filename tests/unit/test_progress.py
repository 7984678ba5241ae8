"""The progress log line (connector.metrics.progress.ProgressLog): deltas, quiet when idle."""

from __future__ import annotations

from connector.metrics.core import Snapshot
from connector.metrics.progress import ProgressLog


def test_a_line_per_interval_with_what_changed_and_none_when_idle() -> None:
    values = {"records": 10.0, "events": 9.0, "duplicates": 1.0, "actions_queued": 9.0}
    progress = ProgressLog(lambda: Snapshot(values=dict(values)))
    assert progress.report() == (
        "progress: +9 events (+1 duplicates, +0 dead records), +9 actions queued, "
        "+0 delivered, +0 dead; 0 pending"
    )
    assert progress.report() is None  # nothing happened since
    values.update(records=12.0, events=11.0, actions_delivered=5.0, outbox_pending=4.0, paused=1)
    assert progress.report() == (
        "progress: +2 events (+0 duplicates, +0 dead records), +0 actions queued, "
        "+5 delivered, +0 dead; 4 pending (partitions paused: too many actions wait)"
    )
