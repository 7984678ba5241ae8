"""The observability stack's files hold together: every metric the alert rules and the
Grafana dashboard query is one the connector's /metrics really serves; Prometheus scrapes
every replica of docker/compose.yaml; promtool accepts the config and the rules, and the
rules' own unit tests (tests/unit/prometheus/alerts_test.yml) pass.

The promtool checks need promtool, from Debian's ``prometheus`` package (``make test``
unpacks it into the cache: ``make promtool``); they are skipped, saying so, without it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from connector.metrics.core import COUNTERS, GAUGES, LATENCY_BUCKETS, Health, Histogram, Snapshot
from connector.metrics.exposition import MetricsServer
from devkit.project import cache_root
from tests.support import ROOT

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "unit" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "kafka-event-connector.json"
# A kec_ name in PromQL: letters, digits and underscores, then not more of them.
METRIC = re.compile(r"\bkec_[a-z0-9_]+")


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path)


def _everything() -> Snapshot:
    """A snapshot with a value in every field, so each metric family has samples."""
    histogram = Histogram(LATENCY_BUCKETS)
    histogram.observe(0.01)
    snap = Snapshot(
        values={key: 1.0 for key in (*COUNTERS, *GAUGES)},
        queued_by_rule={"rule": 1},
        delivered_by_target={"hook": 1},
        failed_by_target={"hook": 1},
        dead_by_target={"hook": 1},
        throttled_seconds_by_target={"hook": 1.0},
        in_flight_by_target={"hook": 1},
        lag={("events.default", 0): 1},
        partitions_by_topic={"events.default": 1},
        owned_by_topic={"events.default": 1},
        delivery_seconds=histogram,
        store_write_seconds=histogram,
    )
    empty = [f.name for f in dataclasses.fields(snap) if not getattr(snap, f.name)]
    assert not empty, f"fill these new Snapshot fields here too: {empty}"
    return snap


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """The sample names (``kec_records_total``, ``kec_delivery_seconds_bucket``, ...) of
    a /metrics answer from the connector's metrics server on a loopback port."""
    server = MetricsServer(_everything, lambda: Health({}), host="127.0.0.1", port=0)
    server.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10).text
    finally:
        server.stop()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def _alert_expressions() -> dict[str, str]:
    rules = [rule for group in _yaml(ALERTS)["groups"] for rule in group["rules"]]
    return {rule["alert"]: rule["expr"] for rule in rules}


def test_every_metric_the_alert_rules_query_is_exported(exported: set[str]) -> None:
    expressions = _alert_expressions()
    assert {
        "KecConsumerLagGrowing",
        "KecStoreDown",
        "KecTargetFailing",
        "KecPartitionsUnowned",
        "KecDeadLettersRising",
    } <= set(expressions)
    for name, expr in expressions.items():
        queried = set(METRIC.findall(expr))
        assert queried <= exported, (name, queried - exported)
        # Each rule but the scrape one is about the connector's own numbers.
        assert queried or name == "KecReplicaDown", name


def test_every_metric_the_dashboard_queries_is_exported(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in METRIC.findall(target["expr"])
    }
    assert queried, "the dashboard queries something"
    assert queried <= exported, queried - exported


def test_prometheus_scrapes_every_replica_of_the_compose_file() -> None:
    services = _yaml(ROOT / "docker" / "compose.yaml")["services"]
    replicas = {name for name, svc in services.items() if svc.get("command", [None])[0] == "run"}
    assert replicas == {"connector-1", "connector-2"}
    jobs = {
        job["job_name"]: job for job in _yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
    }
    targets = {t for c in jobs["kafka-event-connector"]["static_configs"] for t in c["targets"]}
    assert targets == {f"{name}:9464" for name in replicas}
    # The replicas open their metrics port to the compose network, not loopback only.
    for name in replicas:
        assert services[name]["environment"]["KEC_METRICS_HOST"] == "0.0.0.0"
    assert "prometheus" in services


def _promtool() -> str:
    """promtool on PATH, else where ``make promtool`` unpacks it; skips when neither."""
    found = shutil.which("promtool")
    unpacked = cache_root() / "promtool" / "usr" / "bin" / "promtool"
    if found is None and unpacked.is_file():
        found = str(unpacked)
    if found is None:
        pytest.skip(f"promtool is neither on PATH nor at {unpacked} (make promtool puts it there)")
    return found


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_promtool_accepts_the_config_and_the_rules(tmp_path: Path) -> None:
    promtool = _promtool()
    assert "SUCCESS: 6 rules found" in _run(promtool, "check", "rules", str(ALERTS))
    # The config names the rules where the image puts them: point it at the checkout's.
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in config
    copy = tmp_path / "prometheus.yml"
    copy.write_text(config.replace("/etc/prometheus/alerts.yml", str(ALERTS)))
    _run(promtool, "check", "config", str(copy))


def test_each_alert_fires_on_its_failure_and_none_on_a_healthy_deployment() -> None:
    promtool = _promtool()
    tests = _yaml(RULE_TESTS)["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == set(_alert_expressions())  # every rule is seen firing once
    assert "SUCCESS" in _run(promtool, "test", "rules", str(RULE_TESTS))
