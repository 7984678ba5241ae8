"""The garbage collector's settings for a process the connector owns: ``run``, each of
its ``pipeline.processes`` children, and the benchmark's connector rows. Never applied
to a library user's process (its collector is its own business).

A batch of 2,000 events allocates a few hundred thousand objects, nearly all freed by
their reference counts at once. The cyclic collector still counts them: at Python's
default thresholds it ran a young pass every 700 allocations, and every few hundred
thousand a full pass that walks every object alive, most of them the modules,
configuration and clients built at start-up, which never become garbage. Measured on
row (b) of the benchmark (bench/RESULTS.md), the process's CPU time per event fell by
about a fifth with :func:`gc.freeze` after start-up (those objects are left out of every
pass) and young passes every :data:`YOUNG_PASS_EVERY` allocations.
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
