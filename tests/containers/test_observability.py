"""docker/compose.yaml's Prometheus for real: with the shipped docker/connector.yaml it
scrapes both replicas, reads the connector's metrics, loads the alert rules of
docker/prometheus/alerts.yml and evaluates every one without error; with the store
stopped, the store alert goes pending on the replicas' own numbers.

Grafana is not part of the stack: no package registry this project reaches ships it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from tests.containers.conftest import Images
from tests.containers.test_compose import Deployment, compose_or_skip
from tests.support import ROOT, wait_for

REPLICAS = {"connector-1", "connector-2"}
JOB = "kafka-event-connector"


class Prometheus:
    """The deployment's Prometheus HTTP API on the host's loopback."""

    def __init__(self, port: int) -> None:
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10)

    def close(self) -> None:
        self._http.close()

    def _data(self, path: str, **params: str) -> Any:
        reply = self._http.get(path, params=params)
        reply.raise_for_status()
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """An instant query's value per ``instance`` (or per ``topic``, or "" when the
        result has neither label); empty while Prometheus has nothing yet."""
        try:
            result = self._data("/query", query=expr)["result"]
        except httpx.TransportError:
            return {}
        out: dict[str, float] = {}
        for series in result:
            labels = series["metric"]
            out[labels.get("instance", labels.get("topic", ""))] = float(series["value"][1])
        return out

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self._data("/rules")["groups"] for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._data("/alerts")["alerts"])


def test_prometheus_scrapes_both_replicas_and_evaluates_the_alert_rules(
    images: Images, report: Callable[[str], None], request: pytest.FixtureRequest
) -> None:
    compose = compose_or_skip(request)
    deployment = Deployment(compose, images, ROOT / "docker" / "connector.yaml")
    prometheus = Prometheus(deployment.prometheus_port)
    started = time.monotonic()
    try:
        deployment.run("up", "-d")
        up = f'up{{job="{JOB}"}}'
        wait_for(
            lambda: prometheus.query(up) == dict.fromkeys(REPLICAS, 1.0),
            timeout=240,
            interval=1,
            what="Prometheus to scrape both replicas (up == 1)",
        )
        scraped_after = time.monotonic() - started

        # The connector's own numbers, as Prometheus stored them: the store answers each
        # replica, and between them they read every partition of the topics they consume.
        wait_for(
            lambda: prometheus.query("kec_store_up") == dict.fromkeys(REPLICAS, 1.0),
            timeout=60,
            interval=1,
            what="kec_store_up == 1 on both replicas",
        )

        def every_partition_read_by_both() -> bool:
            # The first replica up reads every partition until the second joins the group
            # and the next rebalance gives it its share: wait for that, not only the sum.
            # A balanced share may give one replica all of one topic and the other all of
            # the other, so each replica's share is counted over both topics.
            total = prometheus.query("max by (topic) (kec_topic_partitions)")
            owned = prometheus.query("sum by (topic) (kec_partitions_owned)")
            shares = prometheus.query("sum by (instance) (kec_partitions_owned)")
            return (
                bool(total) and "events.default" in total and owned == total
                and set(shares) == REPLICAS and all(n > 0 for n in shares.values())
            )  # fmt: skip

        wait_for(every_partition_read_by_both, timeout=120, interval=1,
                 what="the replicas to share every partition")  # fmt: skip

        # Every rule of alerts.yml is loaded, and evaluates without error on live data.
        shipped = YAML(typ="safe").load(ROOT / "docker" / "prometheus" / "alerts.yml")
        names = {rule["alert"] for group in shipped["groups"] for rule in group["rules"]}
        wait_for(  # an unevaluated rule's lastEvaluation is the zero time, year 0001
            lambda: all(not r["lastEvaluation"].startswith("0001") for r in prometheus.rules()),
            timeout=60,
            interval=1,
            what="every alert rule evaluated once",
        )
        rules = {rule["name"]: rule for rule in prometheus.rules()}
        assert set(rules) == names
        assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(
            names, "ok"
        ), {name: rule.get("lastError") for name, rule in rules.items()}

        # The store goes away: the replicas say so, and the store alert goes pending.
        stopped = time.monotonic()
        deployment.run("stop", "-t", "5", "postgres")

        def store_alert() -> set[str]:
            return {
                alert["labels"].get("instance", "")
                for alert in prometheus.alerts()
                if alert["labels"]["alertname"] == "KecStoreDown"
                and alert["state"] in ("pending", "firing")
            }

        wait_for(lambda: bool(store_alert()), timeout=120, interval=1,
                 what="KecStoreDown pending after the store stopped")  # fmt: skip
        assert store_alert() <= REPLICAS
        report(
            f"observability: Prometheus scraped both replicas {scraped_after:.0f}s after "
            f"`up`; {len(names)} alert rules healthy; KecStoreDown pending "
            f"{time.monotonic() - stopped:.0f}s after the store stopped"
        )
    except BaseException:
        print(deployment.run("logs", "--tail", "40", "prometheus", "connector-1", "connector-2"))
        raise
    finally:
        prometheus.close()
        deployment.run("down", "-v", "--remove-orphans", "-t", "5")
