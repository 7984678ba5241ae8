"""Steps 1–3 of the protocol: Kafka records → checkpoint store → dispatcher, batch after
batch (docs/architecture.md, "The exactly-once protocol").

* :mod:`~connector.pipeline.pipeline`: :class:`Pipeline` (poll, checkpoint, commit
  offsets; partition claims and fencing; backpressure) and :class:`PipelineSettings`;
* :mod:`~connector.pipeline.readwatch` and :mod:`~connector.pipeline.timers`: the
  partitions that must start reading, and the time-driven rules' due pass.

Records that cannot become actions (*poison*) get their dead-letter copies from
:mod:`kec.deadletter`, shared with the Kafka listener, and their store rows from
:class:`checkpoint.base.DeadRecord`.

Step 4 is :mod:`connector.dispatch`'s; the rules the pipeline evaluates inside its
transaction are :mod:`connector.rules`'.
"""

from __future__ import annotations

from connector.pipeline.pipeline import Pipeline, PipelineSettings, PipelineStats

__all__ = ["Pipeline", "PipelineSettings", "PipelineStats"]
