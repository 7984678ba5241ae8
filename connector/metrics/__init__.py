"""What a running connector counts and shows (docs/architecture.md, "The pipeline").

* :mod:`~connector.metrics.core`: :class:`~connector.metrics.core.Histogram`, what the
  hot path (the pipeline, the dispatcher) records into; standard library only;
* :mod:`~connector.metrics.exposition`: the Prometheus metrics, the probes (``/livez``,
  ``/healthz``) and their server, and the progress log line; the one module that imports
  ``prometheus_client``.

This package imports neither, so the hot path loads no Prometheus
(tests/unit/test_hot_path_imports.py).
"""
