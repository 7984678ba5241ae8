"""The garbage collector's settings for a process the connector owns: ``run``, each of
its ``pipeline.processes`` children, and the benchmark's connector rows. Never applied
to a library user's process (its collector is its own business).

A batch holds thousands of events, actions and their dicts alive at once, and the
dispatcher holds every action not settled yet. Python's collector counts the objects
allocated and not yet freed: at its default thresholds it ran a young pass every 700 of
them, carried the batch's objects into the older generations while they were in use,
and ran full passes that walk every object alive, most of them the modules,
configuration and clients built at start-up, which never become garbage. On row (b) of
the benchmark, py-spy put 15% of the pipeline thread's samples in the collector; with
:func:`gc.freeze` after start-up (those objects are left out of every pass) and young
passes every :data:`YOUNG_PASS_EVERY` allocations, the process's CPU time per event fell
by about a quarter (bench/RESULTS.md).
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_PASS_EVERY", "settle_for_service"]

YOUNG_PASS_EVERY = 50_000  # allocations (Python's default: 700)
MIDDLE_PASS_EVERY = 20  # young passes per middle pass (default: 10)
FULL_PASS_EVERY = 10  # middle passes per full pass, as Python's default


def settle_for_service() -> None:
    """Freeze what start-up built and space the collector's passes out; call once the
    service is built, before it runs. Cyclic garbage is still collected, in fewer,
    larger passes."""
    gc.collect()  # what start-up left as garbage goes now, not into the frozen set
    gc.freeze()
    gc.set_threshold(YOUNG_PASS_EVERY, MIDDLE_PASS_EVERY, FULL_PASS_EVERY)
