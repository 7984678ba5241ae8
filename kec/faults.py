"""Crash points for the chaos tests: SIGKILL this process at a named protocol step.

``KEC_CRASH_AT=after_checkpoint`` kills the process the first time the pipeline reaches
that step; ``KEC_CRASH_AT=after_checkpoint:3`` the third time. Unset (production), a crash
point costs one comparison. The names are the rows of the crash table in docs/architecture.md.
"""

from __future__ import annotations

import os
import signal

CRASH_POINTS = (
    "after_poll",  # records fetched, nothing written
    "after_checkpoint",  # store transaction durable, Kafka offset not committed
    "after_commit",  # Kafka offset committed, actions not dispatched
    "mid_dispatch",  # some actions of a dispatch round delivered, others not
    "after_dispatch",  # all delivered, not yet marked done in the outbox
)
# Crash points outside the pipeline (kept apart: the chaos suite runs the pipeline at each
# of CRASH_POINTS).
STEP_CRASH_POINTS = (
    "before_event_checkpointed",  # wait_for_event: step stored, listener not yet told
)


def _armed() -> tuple[str | None, int]:
    spec = os.environ.get("KEC_CRASH_AT", "")
    if not spec:
        return None, 0
    name, _, nth = spec.partition(":")
    known = CRASH_POINTS + STEP_CRASH_POINTS
    if name not in known:
        raise ValueError(f"KEC_CRASH_AT={spec!r}: unknown crash point (one of {known})")
    return name, int(nth or 1)


_POINT, _REMAINING = _armed()


def crash_point(name: str) -> None:
    """Die here, with SIGKILL, if this is the armed crash point's n-th hit."""
    global _REMAINING
    if name != _POINT:
        return
    _REMAINING -= 1
    if _REMAINING <= 0:
        os.kill(os.getpid(), signal.SIGKILL)
