"""The traps a first-time user fell into: which namespace a config's client writes to,
and what a taken port says. None of this needs a broker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from connector.commands.ports import check_listen
from connector.config import load_config
from connector.notification import NotificationClient
from kec.errors import ConfigError, ConnectorError
from tests.support import run_in_repo


def config(tmp_path: Path, namespaces: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"kafka: {{bootstrap_servers: '127.0.0.1:1'}}\nnamespaces: {namespaces}\n")
    return path


def test_from_config_writes_to_the_only_namespace(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, "{orders: {}}"))
    client = NotificationClient.from_config(cfg, environ={})
    assert client.namespace == "orders"
    assert client.topic_for(client.namespace) == "events.orders"


def test_from_config_refuses_to_guess_among_several_namespaces(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, "{orders: {}, default: {}}"))
    with pytest.raises(ConfigError, match=r"2 namespaces \(default, orders\): name the client"):
        NotificationClient.from_config(cfg, environ={})
    assert NotificationClient.from_config(cfg, "orders", environ={}).namespace == "orders"
    # Inside a task, KEC_NAMESPACE names it as it does for the plain constructor.
    task = NotificationClient.from_config(cfg, environ={"KEC_NAMESPACE": "default"})
    assert task.namespace == "default"


def test_from_config_takes_topic_creation_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "kafka: {bootstrap_servers: '127.0.0.1:1'}\n"
        "namespaces: {orders: {topics: [orders-in]}}\n"
        "topic_creation: {enabled: false, partitions: 6}\n"
    )
    client = NotificationClient.from_config(load_config(path), environ={})
    assert client.topic_for("orders") == "orders-in"
    policy = client._topics._policy  # what the client will do with a missing topic
    assert (policy.create, policy.partitions) == (False, 6)


def test_a_taken_port_is_named_with_the_reason_and_the_setting() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConnectorError) as caught:
            check_listen("127.0.0.1", port, what="the HTTP gateway", setting="http.port in c.yaml")
    message = str(caught.value)
    assert f"the HTTP gateway cannot listen on 127.0.0.1:{port}: port {port} is already in use" in (
        message
    )
    assert "(http.port in c.yaml)" in message
    check_listen("127.0.0.1", 0, what="x", setting="y")  # port 0: any free port will do


def test_a_host_of_another_machine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"192\.0\.2\.1 is not an address of this machine"):
        check_listen("192.0.2.1", 8000, what="the HTTP gateway", setting="http.host")


def test_gateway_command_on_a_taken_port_says_which_and_why(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_in_repo(
            "-m", "connector", "gateway", "--bootstrap", "127.0.0.1:1",
            "--listen", f"127.0.0.1:{port}", "--store", f"sqlite:///{tmp_path / 's.db'}",
            timeout=60,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"port {port} is already in use by another process" in done.stderr
    assert "(--listen)" in done.stderr
