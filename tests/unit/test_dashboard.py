"""The Grafana dashboard in docker/grafana is built on metrics the connector exports."""

from __future__ import annotations

import json
import re

from connector.metrics.exposition import COUNTERS, GAUGES
from tests.support import ROOT

LABELED = {
    "kec_actions_queued_by_rule_total",
    "kec_actions_delivered_by_target_total",
    "kec_actions_failed_by_target_total",
    "kec_actions_dead_by_target_total",
    "kec_consumer_lag",
    "kec_delivery_seconds_bucket",
    "kec_store_write_seconds_bucket",
}


def test_every_metric_the_dashboard_queries_exists() -> None:
    dashboard = json.loads((ROOT / "docker" / "grafana" / "kafka-event-connector.json").read_text())
    exported = {f"kec_{k}_total" for k in COUNTERS} | {f"kec_{k}" for k in GAUGES} | LABELED
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"kec_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries something"
    assert queried <= exported, queried - exported
