"""The supervisor's view of a stopped child: seen stopped from /proc, and the session
timeout that bounds how long it may stay so on a SQLite store (connector.supervisor)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from connector.supervisor import ChildSpec, is_stopped, session_seconds
from tests.support import wait_for


def _spec(session_ms: int | None) -> ChildSpec:
    return ChildSpec(Path("c.yaml"), None, "i", 1, False, session_timeout_ms=session_ms)


def test_a_stopped_process_is_seen_stopped_and_a_continued_one_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not is_stopped(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        wait_for(lambda: is_stopped(child.pid), timeout=10, what="the child stopped")
        os.kill(child.pid, signal.SIGCONT)
        wait_for(lambda: not is_stopped(child.pid), timeout=10, what="the child continued")
    finally:
        child.kill()
        child.wait(10)
    assert not is_stopped(child.pid), "a process that is gone is not stopped"


def test_the_session_timeout_is_the_property_else_the_specs_else_kafkas() -> None:
    assert session_seconds({}, [_spec(None)]) == 45.0
    assert session_seconds({}, [_spec(10_000), _spec(10_000)]) == 10.0
    assert session_seconds({"session.timeout.ms": "6000"}, [_spec(10_000)]) == 6.0
    assert session_seconds({"session.timeout.ms": 7000}, []) == 7.0
