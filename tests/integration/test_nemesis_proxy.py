"""The nemesis proxy (tests/nemesis) against the real PostgreSQL server and a real broker:
each fault does what the tests that rely on it expect."""

from __future__ import annotations

import random
import socket
import struct
import time
import uuid
from collections.abc import Callable

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devkit.broker import KafkaCluster
from tests.nemesis.pg import GSSENC_REQUEST, SSL_REQUEST, PgProxy
from tests.nemesis.proxy import ControlError, Proxy, RemoteProxy
from tests.support import wait_for


@pytest.fixture
def db(pg_store_url: Callable[[], str]) -> str:
    """A fresh database with one table, ``t (x int)``; its direct URL."""
    url = pg_store_url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    return url


def _rows(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [x for (x,) in conn.execute("SELECT x FROM t ORDER BY x")]


def test_swallowed_commit_ack_is_committed_on_the_server(db: str, pg_proxy: PgProxy) -> None:
    with psycopg.connect(pg_proxy.dsn(db), autocommit=True) as conn:
        with conn.transaction():
            conn.execute("INSERT INTO t VALUES (1)")
        pg_proxy.swallow_commit_acks(1)
        with pytest.raises(psycopg.OperationalError), conn.transaction():
            conn.execute("INSERT INTO t VALUES (2)")
        assert conn.closed
    assert _rows(db) == [1, 2], "the server committed what the client saw fail"
    assert pg_proxy.swallowed == 1
    # psycopg sends a transaction block's COMMIT as a simple Query message.
    assert pg_proxy.statements()[-3:] == [
        ("Q", "BEGIN"),
        ("Q", "INSERT INTO t VALUES (2)"),
        ("Q", "COMMIT"),
    ]
    # One swallowed, then answers pass again.
    with psycopg.connect(pg_proxy.dsn(db)) as conn:
        conn.execute("INSERT INTO t VALUES (3)")
        conn.commit()
    assert _rows(db) == [1, 2, 3]
    stats = pg_proxy.stats()
    assert (stats["commit_requests"], stats["commit_acks"], stats["swallowed"]) == (3, 3, 1)


def test_swallowed_commit_ack_in_pipeline_mode(db: str, pg_proxy: PgProxy) -> None:
    """In pipeline mode COMMIT goes through Parse/Bind/Execute (the extended protocol)."""
    pg_proxy.swallow_commit_acks(1)
    with (
        psycopg.connect(pg_proxy.dsn(db), autocommit=True) as conn,
        pytest.raises(psycopg.OperationalError),
        conn.pipeline(),
        conn.transaction(),
    ):
        conn.execute("INSERT INTO t VALUES (%s)", (7,))
    assert _rows(db) == [7]
    assert ("P", "COMMIT") in pg_proxy.statements()
    assert pg_proxy.swallowed == 1


def test_swallow_probability_is_reproducible_from_its_seed(db: str, pg_proxy: PgProxy) -> None:
    pg_proxy.swallow_commit_acks(probability=0.5, seed=7)
    failed: list[bool] = []
    for x in range(16):
        with psycopg.connect(pg_proxy.dsn(db), autocommit=True) as conn:
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO t VALUES (%s)", (x,))
            except psycopg.OperationalError:
                failed.append(True)
            else:
                failed.append(False)
    draws = random.Random(7)
    assert failed == [draws.random() < 0.5 for _ in range(16)]
    assert 0 < pg_proxy.swallowed == sum(failed) < 16
    assert _rows(db) == list(range(16)), "every transaction committed, acknowledged or not"


def _encryption_answer(address: tuple[str, int], code: int, user: str) -> bytes:
    """Send an encryption request; the one-byte answer, and on ``N`` the first byte of the
    answer to a plaintext startup that follows; ``b"reset"`` if the connection drops."""
    try:
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(struct.pack("!ii", 8, code))
            answer = sock.recv(1)
            if answer != b"N":
                return answer
            params = b"user\0" + user.encode() + b"\0\0"
            sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
            return answer + sock.recv(1)  # R (authentication) or E
    except ConnectionResetError:
        return b"reset"


@pytest.mark.parametrize("code", [SSL_REQUEST, GSSENC_REQUEST], ids=["ssl", "gssenc"])
def test_encryption_refused_by_the_server_passes_accepted_resets(
    db: str, pg_proxy: PgProxy, code: int
) -> None:
    user = str(conninfo_to_dict(db).get("user") or "postgres")
    direct = _encryption_answer(pg_proxy.upstream, code, user)
    proxied = _encryption_answer(("127.0.0.1", pg_proxy.port), code, user)
    if direct[:1] == b"N":
        assert proxied == direct, "the server's N passed on, then plaintext as usual"
    else:  # the server would encrypt: the proxy does not follow TLS or GSS
        assert (direct, proxied) in ((b"S", b"reset"), (b"G", b"reset"))
    assert pg_proxy.stats()["encryption_requests"] == 1


def test_libpq_prefers_ssl_then_plaintext_through_the_proxy(db: str, pg_proxy: PgProxy) -> None:
    with psycopg.connect(pg_proxy.dsn(db, sslmode="prefer")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pg_proxy.stats()["encryption_requests"] >= 1


def test_blackhole_times_connections_out_then_heals(db: str, pg_proxy: PgProxy) -> None:
    pg_proxy.blackhole(True)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_proxy.dsn(db, connect_timeout=2, sslmode="disable"))
    assert time.monotonic() - started < 20
    pg_proxy.blackhole(False)
    with psycopg.connect(pg_proxy.dsn(db, connect_timeout=10)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_refuse_resets_new_connections(db: str, pg_proxy: PgProxy) -> None:
    pg_proxy.refuse(True)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_proxy.dsn(db, connect_timeout=10))
    assert pg_proxy.stats()["refused"] >= 1
    pg_proxy.refuse(False)
    with psycopg.connect(pg_proxy.dsn(db, connect_timeout=10)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_reset_all_breaks_open_connections(db: str, pg_proxy: PgProxy) -> None:
    # Not a context manager: its exit would COMMIT on a connection that libpq may still
    # think busy (the reset can land between sending the query and reading its answer).
    conn = psycopg.connect(pg_proxy.dsn(db), autocommit=True)
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert pg_proxy.reset_all() == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        conn.close()
    with psycopg.connect(pg_proxy.dsn(db)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_delay_slows_each_round_trip(db: str, pg_proxy: PgProxy) -> None:
    with psycopg.connect(pg_proxy.dsn(db), autocommit=True) as conn:
        pg_proxy.delay(0.5)
        started = time.monotonic()
        conn.execute("SELECT 1")
        delayed = time.monotonic() - started
        pg_proxy.delay(0)
        started = time.monotonic()
        conn.execute("SELECT 1")
        undelayed = time.monotonic() - started
    assert delayed >= 0.9, "the query and its answer each waited 0.5 s"
    assert undelayed < 0.9


def test_proxy_process_under_remote_control(db: str) -> None:
    info = conninfo_to_dict(db)
    upstream = (str(info["host"]), int(info["port"] or 5432))
    with RemoteProxy.spawn(upstream, pg=True) as remote:
        with pytest.raises(ControlError, match="n must be"):
            remote.swallow_commit_acks(-1)
        remote.swallow_commit_acks(1)
        dsn = make_conninfo(db, host="127.0.0.1", port=str(remote.port))
        with (
            psycopg.connect(dsn, autocommit=True) as conn,
            pytest.raises(psycopg.OperationalError),
            conn.transaction(),
        ):
            conn.execute("INSERT INTO t VALUES (1)")
        assert remote.swallowed == 1
        assert ("Q", "COMMIT") in remote.statements()
        assert _rows(db) == [1]
        assert remote.stop() == 0


# --- Kafka ----------------------------------------------------------------------------


def _deliver(producer: Producer, topic: str, value: str, timeout: float) -> KafkaError | None:
    """Produce one record; its delivery error (None: acknowledged), waited up to timeout."""
    reports: list[KafkaError | None] = []
    producer.produce(topic, value=value, on_delivery=lambda err, _msg: reports.append(err))

    def reported() -> bool:
        producer.poll(0.1)
        return bool(reports)

    wait_for(reported, timeout=timeout, interval=0, what=f"the delivery report of {value!r}")
    return reports[0]


def _read_all(
    bootstrap: str, topic: str, wanted: set[str], isolation: str = "read_uncommitted"
) -> None:
    """Consume ``topic`` until every value in ``wanted`` was seen; fail after a bound."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"g-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": isolation,
    })  # fmt: skip
    seen: set[str] = set()
    consumer.subscribe([topic])
    try:

        def more() -> bool:
            msg: Message | None = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen.add((msg.value() or b"").decode())
            return wanted <= seen

        wait_for(more, timeout=60, interval=0, what=f"records {sorted(wanted)}")
    finally:
        consumer.close()


def test_kafka_through_the_proxy_blackhole_and_reset(
    proxied_kafka: tuple[KafkaCluster, Proxy],
) -> None:
    cluster, proxy = proxied_kafka
    assert cluster.bootstrap_servers == proxy.address
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    brokers = admin.list_topics(timeout=30).brokers
    assert {f"{b.host}:{b.port}" for b in brokers.values()} == {proxy.address}, "advertised"
    topic = f"nemesis-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=30
    )
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap_servers,
        "acks": "all",
        "message.timeout.ms": 3000,
    })  # fmt: skip
    assert _deliver(producer, topic, "before", timeout=30) is None

    proxy.blackhole(True)
    err = _deliver(producer, topic, "lost", timeout=30)
    assert err is not None, "no acknowledgement through a blackhole"
    assert err.code() in (KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT)
    proxy.blackhole(False)
    assert _deliver(producer, topic, "after", timeout=30) is None

    assert proxy.reset_all() >= 1
    assert _deliver(producer, topic, "after reset", timeout=30) is None
    producer.flush(10)
    _read_all(cluster.bootstrap_servers, topic, {"before", "after", "after reset"})


def test_transactions_through_the_proxied_broker(
    proxied_kafka: tuple[KafkaCluster, Proxy],
) -> None:
    """A transaction commits and becomes visible (its markers, the broker's traffic to
    itself, take the broker's INTERNAL listener) while the clients go through the proxy."""
    cluster, _proxy = proxied_kafka
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    topic = f"nemesis-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=30
    )
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap_servers,
        "transactional.id": f"tx-{uuid.uuid4().hex[:12]}",
    })  # fmt: skip
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"in a transaction")
    producer.commit_transaction(30)
    _read_all(cluster.bootstrap_servers, topic, {"in a transaction"}, isolation="read_committed")
