"""The metrics server (connector.metrics.exposition.MetricsServer) on a real loopback port: labeled
metrics, readiness with its checks, liveness, and 404 for anything else."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from connector.metrics.core import LATENCY_BUCKETS, Histogram
from connector.metrics.exposition import Health, MetricsServer, Snapshot


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[], Snapshot], Callable[[], Health]], str]]:
    servers: list[MetricsServer] = []

    def start(snapshot: Callable[[], Snapshot], health: Callable[[], Health]) -> str:
        server = MetricsServer(snapshot, health, host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        server.stop()


def snapshot() -> Snapshot:
    delivery = Histogram(LATENCY_BUCKETS)
    delivery.observe(0.003, count=4)
    delivery.observe(2.0)
    return Snapshot(
        values={
            "records": 12.0,
            "events": 10.0,
            "outbox_pending": 3.0,
            "kafka_connected": 1,
            "store_up": 1,
        },
        queued_by_rule={"start-wf": 7, "notify": 3},
        delivered_by_target={"hook": 5},
        dead_by_target={"hook": 1},
        lag={("orders", 2): 41},
        partitions_by_topic={"orders": 6},
        owned_by_topic={"orders": 3},
        delivery_seconds=delivery,
    )


def test_metrics_carry_labels_per_rule_target_and_partition(
    serve: Callable[[Callable[[], Snapshot], Callable[[], Health]], str],
) -> None:
    base = serve(snapshot, lambda: Health({"kafka": True}))
    text = httpx.get(f"{base}/metrics", timeout=10).text
    assert "kec_records_total 12.0" in text
    assert 'kec_actions_queued_by_rule_total{rule="start-wf"} 7.0' in text
    assert 'kec_actions_delivered_by_target_total{target="hook"} 5.0' in text
    assert 'kec_actions_dead_by_target_total{target="hook"} 1.0' in text
    assert 'kec_consumer_lag{partition="2",topic="orders"} 41.0' in text
    assert "kec_kafka_connected 1.0" in text
    assert "kec_store_up 1.0" in text
    assert 'kec_topic_partitions{topic="orders"} 6.0' in text
    assert 'kec_partitions_owned{topic="orders"} 3.0' in text
    assert 'kec_delivery_seconds_bucket{le="0.005"} 4.0' in text
    assert 'kec_delivery_seconds_bucket{le="+Inf"} 5.0' in text
    assert "kec_delivery_seconds_count 5.0" in text


def test_healthz_says_which_check_fails_livez_answers_and_others_are_404(
    serve: Callable[[Callable[[], Snapshot], Callable[[], Health]], str],
) -> None:
    state = {"kafka": True, "group": True, "store": True}
    base = serve(snapshot, lambda: Health(dict(state)))
    with httpx.Client(base_url=base, timeout=10) as http:
        ready = http.get("/healthz")
        assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        state["kafka"] = False
        down = http.get("/healthz")
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/json"
        assert down.json() == {
            "status": "not ready",
            "checks": {"kafka": False, "group": True, "store": True},
            "failing": ["kafka"],
        }
        assert http.get("/livez").json() == {"status": "alive"}
        assert http.post("/healthz").status_code == 405
        missing = http.get("/nothing-here")
        assert missing.status_code == 404 and "no such path" in missing.json()["error"]


def test_healthz_is_503_with_a_json_error_when_the_check_itself_fails(
    serve: Callable[[Callable[[], Snapshot], Callable[[], Health]], str],
) -> None:
    def broken() -> Health:
        raise RuntimeError("store closed")

    base = serve(snapshot, broken)
    with httpx.Client(base_url=base, timeout=10) as http:
        health = http.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "error", "error": "RuntimeError('store closed')"}
        assert http.get("/livez").status_code == 200  # the process itself is alive
