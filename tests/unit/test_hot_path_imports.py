"""The hot path records metrics without Prometheus: importing the pipeline and the
dispatcher loads no ``prometheus_client``; only the exposition (connector.metrics.exposition) does.

Checked in a fresh interpreter, since this one has loaded everything already.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector.metrics.core import Histogram
from tests.support import run_in_repo

HOT_PATH = ("connector.pipeline", "connector.dispatch")

CHILD = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "prometheus_client")))
"""


def _prometheus_after_importing(*modules: str) -> list[str]:
    done = run_in_repo("-c", CHILD, *modules)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_pipeline_and_the_dispatcher_load_no_prometheus() -> None:
    assert _prometheus_after_importing(*HOT_PATH) == []


BUILD = """
import json, sys
from pathlib import Path
from connector.assembly import build_service
from connector.config import load_config

service = build_service(load_config(Path(sys.argv[1])))
service.store.close()
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "prometheus_client")))
"""


@pytest.mark.parametrize("metrics", [False, True], ids=["without-metrics", "with-metrics"])
def test_the_service_loads_prometheus_only_for_a_metrics_endpoint(
    tmp_path: Path, metrics: bool
) -> None:
    """Built from a file with the gateway and every companion, the service loads
    Prometheus only when the file asks for ``metrics:`` (which shows the check can fail)."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: 127.0.0.1:9}\n"
        f"checkpoint: {{backend: sqlite, path: {tmp_path / 'c.db'}}}\n"
        "namespaces: {orders: {}}\n"
        "targets: {out: {type: log}}\n"
        "rules: [{name: r, namespace: orders, key: k, action: start, workflow: w, "
        "target: out}]\n"
        "http: {host: 127.0.0.1, port: 0}\n"
        "admin: {host: 127.0.0.1, port: 0}\n"
        + ("metrics: {host: 127.0.0.1, port: 0}\n" if metrics else "")
    )
    done = run_in_repo("-c", BUILD, str(config))
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert ("prometheus_client" in loaded) is metrics, loaded


def test_the_exposition_does() -> None:
    # The check above would pass for a misspelt module name; this one shows it can fail.
    assert "prometheus_client" in _prometheus_after_importing("connector.metrics.exposition")


@pytest.mark.parametrize(
    ("value", "bucket"), [(0.0, 0), (0.001, 0), (0.0011, 1), (30.0, 2), (31.0, 3)]
)
def test_an_observation_on_a_bound_counts_in_that_bucket(value: float, bucket: int) -> None:
    histogram = Histogram((0.001, 1, 30))
    histogram.observe(value, count=2)
    assert histogram.counts == [2 if i == bucket else 0 for i in range(4)]
    cumulative, total = histogram.cumulative()
    assert cumulative == [
        (bound, 2 if i >= bucket else 0) for i, bound in enumerate((0.001, 1, 30, float("inf")))
    ]
    assert total == value * 2
