"""The local broker's failure modes name their cause and never hang or leave a JVM behind."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.broker import DevBroker, resolve_jars
from devkit.errors import DevBrokerError
from devkit.project import manifest_dir
from tests.support import wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the local JVM broker path needs Java and Maven (make installs them)",
)


def _jvm_pids(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return out.stdout.split()


def test_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = DevBroker(resolve_jars(), port=port)
        with pytest.raises(DevBrokerError, match=rf"port {port} .*already in use"):
            broker.start()


def test_no_java_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevBrokerError, match="Java not found"):
        DevBroker(tmp_path).start()


def test_no_maven_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEC_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevBrokerError, match=r"Maven \(mvn\) not found"):
        resolve_jars()


def test_failed_resolution_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bogus = tmp_path / "manifest"
    shutil.copytree(manifest_dir(), bogus)
    pom = bogus / "pom.xml"
    pom.write_text(pom.read_text().replace("<kafka.version>", "<kafka.version>0.0.0-nope-"))
    monkeypatch.setenv("KEC_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DevBrokerError, match="jar resolution failed"):
        resolve_jars(bogus)
    assert not list((tmp_path / "cache").glob("kafka-*")), "no partial cache entry kept"


def test_start_timeout_is_bounded_and_leaves_no_jvm(tmp_path: Path) -> None:
    broker = DevBroker(resolve_jars(), workdir=tmp_path / "b", start_timeout=0.5)
    with pytest.raises(DevBrokerError, match=r"did not answer within 0?s|did not answer"):
        broker.start()
    assert _jvm_pids(str(tmp_path / "b")) == []


def test_broker_dies_with_its_parent(tmp_path: Path) -> None:
    """A SIGKILLed owner takes its broker with it (no orphan JVM after a crashed test run)."""
    workdir = tmp_path / "orphan"
    code = (
        "import sys, os, signal\n"
        "from devkit.broker import DevBroker, resolve_jars\n"
        "from pathlib import Path\n"
        f"b = DevBroker(resolve_jars(), workdir=Path({str(workdir)!r})); b.start()\n"
        "print(b.bootstrap_servers, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == -9, done.stderr
    assert done.stdout.startswith("127.0.0.1:")
    from tests.support import wait_for

    wait_for(lambda: _jvm_pids(str(workdir)) == [], timeout=60, what="the orphaned JVM to exit")


def test_a_killed_broker_comes_back_on_its_port_with_its_records(tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    broker = DevBroker(resolve_jars(), workdir=tmp_path / "kafka", start_timeout=120)
    broker.start()
    try:
        bootstrap = broker.bootstrap_servers
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("kept", 1, 1)])["kept"].result(timeout=30)
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce("kept", value=b"before the crash")
        assert producer.flush(30) == 0
        broker.kill()
        assert not _jvm_pids(str(tmp_path / "kafka")), "the JVM is gone"
        broker.start()
        assert broker.bootstrap_servers == bootstrap
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                             "auto.offset.reset": "earliest"})  # fmt: skip
        try:
            consumer.subscribe(["kept"])
            msg = wait_for(
                lambda: (m := consumer.poll(1.0)) is not None and m.error() is None and m,
                timeout=90,
                what="the record written before the crash",
            )
            assert msg.value() == b"before the crash"
        finally:
            consumer.close()
    finally:
        broker.close()
