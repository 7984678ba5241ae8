"""The SIGKILL chaos run against a broker that requires SASL/SCRAM-SHA-512 over TLS.

The same workload and invariants as ``test_crash_points.test_random_kills``, but every
client (the connector's consumer, its commits, the test's producer and readers) logs in
with SCRAM over TLS, as on a production cluster: the connector runs from a config file
whose ``kafka:`` section is what ``dev-broker --security sasl-ssl`` prints.
"""

from __future__ import annotations

import random
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from devkit.broker import DevBroker, KafkaCluster, resolve_jars
from tests.chaos.harness import (
    Connector,
    assert_commit_not_ahead,
    check_invariants,
    line_count,
    produce,
    wait_all_delivered,
)
from tests.support import wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the secured local broker is the JVM broker: it needs Java and Maven",
)

EVENTS = 5_000
PARTITIONS = 3
KEYS = 50
KILLS = 6


@pytest.fixture(scope="module")
def scram_cluster() -> Iterator[KafkaCluster]:
    with DevBroker(resolve_jars(), security="sasl-ssl", start_timeout=120) as broker:
        yield broker.cluster()


def test_sigkills_over_sasl_scram_and_tls_lose_nothing(
    scram_cluster: KafkaCluster, tmp_path: Path
) -> None:
    client = {**scram_cluster.client_config(), "sasl.mechanism": "SCRAM-SHA-512"}
    bootstrap = client.pop("bootstrap.servers")
    assert client["security.protocol"] == "SASL_SSL"
    topic = f"chaos-scram-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({**client, "bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS)]).values():
        future.result(timeout=30)
    work = produce(bootstrap, topic, EVENTS, KEYS, PARTITIONS, client)
    store = f"sqlite:///{tmp_path / 'checkpoints.db'}"
    conn = Connector(bootstrap, topic, store, tmp_path / "actions.jsonl", client=client)
    rng = random.Random(20261203)
    try:
        for _ in range(KILLS):
            proc = conn.start()
            goal = min(line_count(conn.log_file) + rng.randint(1, EVENTS // 10), EVENTS)
            wait_for(
                lambda goal=goal, proc=proc: (  # type: ignore[misc]
                    line_count(conn.log_file) >= goal or proc.poll() is not None
                ),
                timeout=120,
                interval=0.02,
                what=f"{goal} deliveries",
            )
            assert proc.poll() is None, conn.stderr_tail()
            conn.kill()
            assert_commit_not_ahead(conn, work)
        conn.start()
        wait_all_delivered(conn, work)
        assert conn.terminate() == 0, conn.stderr_tail()
    finally:
        if conn.proc is not None and conn.proc.poll() is None:
            conn.kill()
    check_invariants(conn, work)  # asserts each invariant itself
