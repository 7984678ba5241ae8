"""connector.common.heap: the collector's settings of the connector's own processes.
Each check runs in a fresh interpreter: the settings are process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

from connector.common.heap import FULL_PASS_EVERY, MIDDLE_PASS_EVERY, YOUNG_PASS_EVERY

_PROBE = """
import gc, json, weakref
from connector.common.heap import settle_for_service
before = gc.get_freeze_count()
settle_for_service()
frozen = gc.get_freeze_count()

class Node:
    pass

collected = []
for _ in range(300_000):  # cycles only the collector can free, and no explicit collect
    a, b = Node(), Node()
    a.other, b.other = b, a
    weakref.finalize(a, collected.append, 1)
    del a, b
print(json.dumps([before, frozen, gc.get_threshold(), len(collected)]))
"""


def test_a_service_process_freezes_start_up_and_still_collects_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    before, frozen, threshold, collected = json.loads(out.stdout)
    assert before == 0 and frozen > 1000, "start-up's objects are frozen"
    assert threshold == [YOUNG_PASS_EVERY, MIDDLE_PASS_EVERY, FULL_PASS_EVERY]
    assert collected > 250_000, "cyclic garbage is still collected, in larger passes"
