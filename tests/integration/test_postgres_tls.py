"""The checkpoint store on a PostgreSQL that requires what production ones do: TLS with
``sslmode=verify-full`` against the session's CA, and SCRAM-SHA-256 passwords
(``DevPostgres(tls=True)``: plain TCP is refused to every user but the fixtures').

Then the mistakes people make, each through ``run``: a wrong password, a CA that did not
sign the server's certificate, no TLS at all. Each is one line naming the setting to look
at, and ``run`` exits 1 at once instead of retrying.
"""

from __future__ import annotations

import json
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from checkpoint import open_store
from devkit.postgres import DevPostgres
from kec.errors import StoreRefused
from tests.integration import secure_postgres
from tests.support import start_run, wait_for

PASSWORD = secure_postgres.PASSWORD
_url = secure_postgres.tls_url  # secure_pg: the session's server (tests/integration/conftest.py)


def test_the_store_works_over_verified_tls_with_a_scram_password(secure_pg: DevPostgres) -> None:
    url = _url(secure_pg)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
        (method,) = conn.execute("SHOW password_encryption").fetchone() or ("",)
        assert method == "scram-sha-256"
    with open_store(url) as store:
        claims = store.claim("owner-1", [("orders", 0)])
        assert claims[("orders", 0)].epoch >= 1
        assert [p.tp for p in store.partitions()] == [("orders", 0)]


@pytest.mark.parametrize(
    ("mistake", "check"),
    [
        ("password", "the password of the DSN's user"),
        ("ca", "sslrootcert in checkpoint.dsn"),
        ("plain", "sslmode in checkpoint.dsn"),
    ],
)
def test_a_refusal_is_not_retried(secure_pg: DevPostgres, mistake: str, check: str) -> None:
    url = {
        "password": _url(secure_pg, password="not-the-password"),
        "ca": _url(
            secure_pg, tls="sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt"
        ),
        "plain": _url(secure_pg, tls="sslmode=disable"),
    }[mistake]
    with pytest.raises(StoreRefused, match=check) as refused:
        open_store(url).open()
    assert not refused.value.retriable
    assert PASSWORD not in str(refused.value) and "not-the-password" not in str(refused.value)


def _config(tmp_path: Path, bootstrap: str, topic: str, group_id: str, dsn: str) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            kafka: {{bootstrap_servers: "{bootstrap}"}}
            group_id: {group_id}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {{backend: postgres, dsn: "{dsn}"}}
            targets:
              log: {{type: log, path: {tmp_path}/actions.jsonl}}
            rules:
              - {{name: on-order, namespace: shop, key: order, action: notify, target: log}}
            """
        )
    )
    return path


def test_run_checkpoints_over_tls_and_exits_1_on_a_wrong_password(
    secure_pg: DevPostgres,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    topic = new_topic(1)
    log, actions = tmp_path / "run.log", tmp_path / "actions.jsonl"
    process = start_run(_config(tmp_path, bootstrap, topic, group_id, _url(secure_pg)), log)
    try:
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key="order", value=json.dumps({"id": 7}))
        assert producer.flush(30) == 0

        def delivered() -> bool:
            assert process.poll() is None, log.read_text()
            return actions.exists() and actions.read_text().count("\n") == 1

        wait_for(delivered, timeout=60, what="the action, checkpointed over TLS")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    assert process.returncode == 0, log.read_text()

    wrong = _url(secure_pg, password="not-the-password")
    started = time.monotonic()
    refused = start_run(
        _config(tmp_path, bootstrap, topic, group_id, wrong), tmp_path / "wrong.log"
    )
    refused.wait(60)
    text = (tmp_path / "wrong.log").read_text()
    assert refused.returncode == 1, text
    assert time.monotonic() - started < 30, "refused at once, not retried"
    (line,) = [x for x in text.splitlines() if x.startswith("error:")]
    assert "check the password of the DSN's user (checkpoint.dsn)" in line
    assert "not-the-password" not in text
