"""Steps 1–3 of the protocol: Kafka records → checkpoint store → dispatcher, batch after
batch (docs/architecture.md, "The exactly-once protocol").

* :mod:`~connector.pipeline.pipeline`: :class:`Pipeline` (poll, checkpoint, commit
  offsets; partition claims and fencing; backpressure) and :class:`PipelineSettings`;
* :mod:`~connector.pipeline.deadletter`: records that cannot become actions (*poison*),
  their dead-letter copies and their store rows.

Step 4 is :mod:`connector.dispatch`'s; the rules the pipeline evaluates inside its
transaction are :mod:`connector.rules`'.
"""

from __future__ import annotations

from connector.pipeline.pipeline import Pipeline, PipelineSettings, PipelineStats

__all__ = ["Pipeline", "PipelineSettings", "PipelineStats"]
