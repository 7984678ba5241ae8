"""Pytest fixtures for the nemesis; a folder's conftest.py imports those it uses.

* ``proxied_kafka``: ``(cluster, proxy)``, a Kafka broker of its own that every client
  reaches through ``proxy``: the broker advertises the proxy's address, so connections
  made after the bootstrap (to the partition leaders, the group coordinator) go through
  the proxy too. One broker per session (the local JVM broker, ~15 s); each test starts
  and ends with every fault healed. ``cluster.bootstrap_servers`` is the proxy's address.
* ``pg_proxy``: a :class:`~tests.nemesis.pg.PgProxy` in front of the session's PostgreSQL
  server (``pg_dsn``), fresh for each test; ``pg_proxy.dsn(url)`` points a URL of that
  server (``pg_store_url()`` among them) through it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict

from devkit.broker import DevBroker, KafkaCluster, resolve_jars
from devkit.server import free_port
from tests.nemesis.pg import PgProxy
from tests.nemesis.proxy import Proxy


@pytest.fixture(scope="session")
def _proxied_kafka_session() -> Iterator[tuple[KafkaCluster, Proxy]]:
    if shutil.which("java") is None or shutil.which("mvn") is None:
        pytest.skip("a broker behind a proxy is the local JVM broker: it needs Java and Maven")
    # The proxy listens first, so the broker's port, picked next, cannot be the proxy's.
    with Proxy(upstream=("127.0.0.1", 0)) as proxy:
        broker_port = free_port()
        proxy.upstream = ("127.0.0.1", broker_port)
        broker = DevBroker(
            resolve_jars(), port=broker_port, advertised_port=proxy.port, start_timeout=120
        )
        with broker:
            yield broker.cluster(), proxy


@pytest.fixture
def proxied_kafka(
    _proxied_kafka_session: tuple[KafkaCluster, Proxy],
) -> Iterator[tuple[KafkaCluster, Proxy]]:
    cluster, proxy = _proxied_kafka_session
    proxy.heal()
    yield cluster, proxy
    proxy.heal()


@pytest.fixture
def pg_proxy(pg_dsn: str) -> Iterator[PgProxy]:
    info = conninfo_to_dict(pg_dsn)
    host = str(info.get("host") or "127.0.0.1")
    if host.startswith("/"):
        pytest.fail(f"pg_proxy needs a TCP address, the server is at the socket {host}")
    with PgProxy(upstream=(host, int(info.get("port") or 5432))) as proxy:
        yield proxy
