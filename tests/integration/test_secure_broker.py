"""The connector against a broker that requires what production clusters require.

Two local brokers (``DevBroker(security=...)``), each started once for the module: one
SASL over TLS broker that takes SCRAM-SHA-512 and PLAIN on the same listener, one mutual
TLS broker. ``event-connector run -c FILE`` runs as a real process with the typed
security fields of the YAML that ``dev-broker`` prints; events come from a plain producer
with the same credentials. Then the wrong credentials: what ``run`` says, and that it
exits.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaTP
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from devkit.broker import DevBroker, KafkaCluster, resolve_jars
from devkit.errors import DevBrokerError
from tests.support import wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None or shutil.which("mvn") is None,
    reason="the secured local broker is the JVM broker: it needs Java and Maven",
)

# (broker mode, SASL mechanism): the cases, two brokers for three.
CASES = [("sasl-ssl", "SCRAM-SHA-512"), ("sasl-ssl", "PLAIN"), ("mtls", None)]
CASE_IDS = ["scram-sha-512", "plain", "mtls"]


def _broker(mode: str) -> Iterator[KafkaCluster]:
    with DevBroker(resolve_jars(), security=mode, start_timeout=120) as broker:
        yield broker.cluster()


@pytest.fixture(scope="module")
def sasl_ssl_broker() -> Iterator[KafkaCluster]:
    yield from _broker("sasl-ssl")


@pytest.fixture(scope="module")
def mtls_broker() -> Iterator[KafkaCluster]:
    yield from _broker("mtls")


def broker(request: pytest.FixtureRequest, mode: str) -> KafkaCluster:
    """The module's broker of ``mode``, started the first time a test asks for it."""
    cluster: KafkaCluster = request.getfixturevalue(f"{mode.replace('-', '_')}_broker")
    return cluster


def client(cluster: KafkaCluster, mechanism: str | None) -> dict[str, str]:
    """The librdkafka settings of a client of ``cluster`` using ``mechanism``."""
    config = cluster.client_config()
    if mechanism is not None:
        config["sasl.mechanism"] = mechanism
    return config


def create_topics(config: dict[str, str], *names: str) -> None:
    admin = AdminClient(config)
    for future in admin.create_topics([NewTopic(n, num_partitions=1) for n in names]).values():
        future.result(timeout=30)


class Records:
    """Every record of a one-partition topic so far, read from the beginning."""

    def __init__(self, config: dict[str, str], topic: str) -> None:
        self._consumer = Consumer({**config, "group.id": "unused", "enable.auto.commit": False})
        self._consumer.assign([KafkaTP(topic, 0, OFFSET_BEGINNING)])
        self.got: list[Message] = []

    def at_least(self, count: int) -> bool:
        for msg in self._consumer.consume(100, 0.2):
            assert msg.error() is None, msg.error()
            self.got.append(msg)
        return len(self.got) >= count

    def close(self) -> None:
        self._consumer.close()


def jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def kafka_block(config: dict[str, str]) -> str:
    """The config's ``kafka:`` section as dev-broker prints it, for this client."""
    cluster = KafkaCluster(
        config["bootstrap.servers"],
        "local-jvm",
        "unknown",
        client_properties={k: v for k, v in config.items() if k != "bootstrap.servers"},
    )
    return cluster.kafka_yaml()


def write_config(tmp_path: Path, config: dict[str, str], **names: str) -> Path:
    # The kafka target names no cluster: it uses the kafka: section, security included.
    text = kafka_block(config) + textwrap.dedent(
        """\
        group_id: {group}
        namespaces:
          shop: {{topics: [{topic}]}}
        dead_letter_topic: {dlq}
        checkpoint: {{backend: sqlite, path: {tmp}/state/checkpoints.db}}
        retry: {{max_attempts: 3, initial_backoff_seconds: 0.05, max_backoff_seconds: 0.2}}
        targets:
          log: {{type: log, path: {tmp}/actions.jsonl}}
          actions: {{type: kafka, topic: {actions}}}
        rules:
          - {{name: start-wf, namespace: shop, key: schedule, action: start, workflow: wf}}
          - {{name: ship, namespace: shop, key: "order-*", action: start, workflow: ship,
              target: actions}}
        """
    ).format(tmp=tmp_path, **names)
    path = tmp_path / "connector.yaml"
    path.write_text(text)
    return path


def run(config_file: Path, output: Path) -> subprocess.Popen[bytes]:
    with open(output, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", str(config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize(("mode", "mechanism"), CASES, ids=CASE_IDS)
def test_run_fires_rules_dead_letters_and_produces_through_the_secured_listener(
    request: pytest.FixtureRequest, mode: str, mechanism: str | None, tmp_path: Path
) -> None:
    secured = broker(request, mode)
    config = client(secured, mechanism)
    suffix = uuid.uuid4().hex[:10]
    topic, dlq, actions = f"shop-{suffix}", f"dlq-{suffix}", f"actions-{suffix}"
    create_topics(config, topic, dlq, actions)
    config_file = write_config(
        tmp_path, config, group=f"g-{suffix}", topic=topic, dlq=dlq, actions=actions
    )
    output = tmp_path / "run.log"
    process = run(config_file, output)
    dead_letters, shipped = Records(config, dlq), Records(config, actions)
    try:
        producer = Producer(config)
        producer.produce(topic, key="schedule", value="go")
        producer.produce(topic, key="order-1", value=json.dumps({"id": 1}))
        producer.produce(topic, value=b"a record without a key")
        assert producer.flush(30) == 0

        def running(condition: bool) -> bool:
            assert process.poll() is None, f"run exited:\n{output.read_text()}"
            return condition

        log_path = tmp_path / "actions.jsonl"
        wait_for(lambda: running(len(jsonl(log_path)) >= 1), timeout=90, what="the log action")
        wait_for(lambda: running(shipped.at_least(1)), timeout=60, what="the kafka target")
        wait_for(lambda: running(dead_letters.at_least(1)), timeout=60, what="the dead letter")
    finally:
        dead_letters.close()
        shipped.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    text = output.read_text()
    assert process.returncode == 0, text

    (logged,) = jsonl(tmp_path / "actions.jsonl")
    assert (logged["rule"], logged["kind"], logged["workflow"]) == ("start-wf", "start", "wf")
    (record,) = shipped.got
    assert json.loads(record.value())["rule"] == "ship"
    (dead,) = dead_letters.got
    assert dead.value() == b"a record without a key"
    headers = {k: v.decode() for k, v in dead.headers() or []}
    assert headers["error-class"] == "DecodeError" and headers["source-topic"] == topic
    if "sasl.password" in config:
        assert config["sasl.password"] not in text


def refused_run(tmp_path: Path, config: dict[str, str]) -> tuple[int, str]:
    """``run`` with ``config`` (which the broker refuses): its exit code and output."""
    suffix = uuid.uuid4().hex[:10]
    config_file = write_config(
        tmp_path, config, group=f"g-{suffix}", topic=f"shop-{suffix}", dlq=f"dlq-{suffix}",
        actions=f"actions-{suffix}",
    )  # fmt: skip
    output = tmp_path / "run.log"
    process = run(config_file, output)
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return code, output.read_text()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_a_wrong_password_exits_1_with_one_line_naming_the_sasl_settings(
    sasl_ssl_broker: KafkaCluster, mechanism: str, tmp_path: Path
) -> None:
    secured = sasl_ssl_broker
    wrong = f"not-the-password-{uuid.uuid4().hex[:6]}"
    code, text = refused_run(tmp_path, {**client(secured, mechanism), "sasl.password": wrong})
    assert code == 1, text
    [line] = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: cannot reach Kafka at {secured.bootstrap_servers}: ")
    assert "authentication failed" in line and line.endswith("(check the SASL settings)")
    assert wrong not in text


def test_a_broker_certificate_from_an_unknown_ca_exits_1_naming_the_ssl_settings(
    sasl_ssl_broker: KafkaCluster, tmp_path: Path
) -> None:
    config = client(sasl_ssl_broker, None)
    del config["ssl.ca.location"]  # the system's CAs, which never signed the session's
    code, text = refused_run(tmp_path, config)
    assert code == 1, text
    [line] = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert "TLS failed" in line and "certificate verify failed" in line
    # librdkafka only says it could not verify; OpenSSL's own reason names the CA.
    assert "OpenSSL: self-signed certificate in certificate chain" in line, line
    assert line.endswith("signed by a CA not trusted here: check ssl_ca_location)"), line


@contextlib.contextmanager
def forwarded(to: str, host: str) -> Iterator[str]:
    """A plain TCP forwarder listening on ``host`` (a loopback address the broker's
    certificate does not name) to the broker at ``to``: a real second name for it."""
    target_host, target_port = to.rsplit(":", 1)
    listener = socket.create_server((host, 0))
    stop = threading.Event()
    opened: list[socket.socket] = []
    pumps: list[threading.Thread] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client_sock, _ = listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection((target_host, int(target_port)))
            opened.extend((client_sock, upstream))
            for a, b in ((client_sock, upstream), (upstream, client_sock)):
                pumps.append(threading.Thread(target=pump, args=(a, b), daemon=True))
                pumps[-1].start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"{host}:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for pumping in pumps:
            pumping.join(5)
        for sock in opened:
            sock.close()


def test_a_broker_certificate_for_another_host_exits_1_naming_the_host_check(
    sasl_ssl_broker: KafkaCluster, tmp_path: Path
) -> None:
    config = client(sasl_ssl_broker, "SCRAM-SHA-512")
    with forwarded(config["bootstrap.servers"], "127.0.0.2") as elsewhere:
        code, text = refused_run(tmp_path, {**config, "bootstrap.servers": elsewhere})
    assert code == 1, text
    [line] = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: cannot reach Kafka at {elsewhere}: TLS failed"), line
    assert "mismatch" in line, line
    assert line.endswith("check bootstrap_servers, or kafka.ssl_endpoint_identification on a "
                         "test cluster only)"), line  # fmt: skip


def test_a_client_without_a_certificate_is_refused_by_the_mtls_broker(
    mtls_broker: KafkaCluster, tmp_path: Path
) -> None:
    config = client(mtls_broker, None)
    del config["ssl.certificate.location"], config["ssl.key.location"]
    code, text = refused_run(tmp_path, config)
    assert code == 1, text
    [line] = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: cannot reach Kafka at {mtls_broker.bootstrap_servers}: ")
    # The broker's TLS alert, as librdkafka reports it: no setting named more closely.
    assert "TLS failed" in line and "bad certificate" in line
    assert line.endswith("(check security_protocol and the SSL settings)")


def test_the_listener_refuses_a_plaintext_client(sasl_ssl_broker: KafkaCluster) -> None:
    admin = AdminClient({"bootstrap.servers": sasl_ssl_broker.bootstrap_servers})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)


def test_kept_data_starts_only_in_the_mode_it_was_formatted_in(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("formatted\n")
    (tmp_path / "security-mode").write_text("mtls\n")
    broker = DevBroker(resolve_jars(), workdir=tmp_path, security="sasl-ssl")
    with pytest.raises(DevBrokerError, match=r"made with --security mtls: start it with"):
        broker.start()


def deny_all(
    config: dict[str, str], principal: str, name: str, kind: ResourceType = ResourceType.TOPIC
) -> None:
    """An ACL that denies ``principal`` everything on the topic (or group) ``name``: the
    broker allows what no ACL names, so this is how one the user was never granted looks."""
    admin = AdminClient(config)
    deny = AclBinding(
        kind, name, ResourcePatternType.LITERAL, principal, "*",
        AclOperation.ALL, AclPermissionType.DENY,
    )  # fmt: skip
    for future in admin.create_acls([deny]).values():
        future.result(timeout=30)


@pytest.mark.parametrize("refused", ["topic", "group"])
def test_a_missing_acl_exits_1_naming_what_and_who(
    sasl_ssl_broker: KafkaCluster, tmp_path: Path, refused: str
) -> None:
    """The topic's ACL is checked when run starts; the group's only when the consumer
    joins it, in the pipeline: both stop run with one line."""
    config = client(sasl_ssl_broker, "SCRAM-SHA-512")
    suffix = uuid.uuid4().hex[:10]
    names = {"group": f"g-{suffix}", "topic": f"shop-{suffix}", "dlq": f"dlq-{suffix}",
             "actions": f"actions-{suffix}"}  # fmt: skip
    create_topics(config, names["topic"], names["dlq"], names["actions"])
    principal = f"User:{config['sasl.username']}"
    if refused == "topic":
        deny_all(config, principal, names["topic"])
        what = f"topic {names['topic']!r}"
    else:
        deny_all(config, principal, names["group"], ResourceType.GROUP)
        what = f"consumer group {names['group']!r}"
    output = tmp_path / "run.log"
    process = run(write_config(tmp_path, config, **names), output)
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    text = output.read_text()
    assert code == 1, text
    [line] = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: not authorized by the cluster's ACLs on {what}"), line
    assert f"grant {principal} (kafka.sasl_username) access" in line, line
