"""The project's images: unprivileged users, health checks that turn healthy, the connector's
entry point and documented paths."""

from __future__ import annotations

import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import httpx
from testcontainers.core.network import Network

from devkit.containers import KafkaContainer, PostgresContainer
from devkit.containers import docker_host as engine_address
from tests.containers.conftest import Images
from tests.containers.support import (
    connector_container,
    health,
    logs,
    wait_healthy,
)
from tests.support import wait_for


def _run(image: str, *argv: str) -> tuple[int, str, str]:
    """``docker run --rm --entrypoint ARGV[0] IMAGE ARGV[1:]``: exit code, stdout, stderr.

    The container goes with its anonymous volumes (the images declare some).
    """
    client = docker.DockerClient(base_url=engine_address())
    container = client.containers.run(image, entrypoint=list(argv), detach=True)
    try:
        code = int(container.wait(timeout=120)["StatusCode"])
        out = container.logs(stdout=True, stderr=False).decode().strip()
        err = container.logs(stdout=False, stderr=True).decode().strip()
    finally:
        container.remove(force=True, v=True)
        client.close()
    return code, out, err


def _output(image: str, *argv: str) -> str:
    code, out, err = _run(image, *argv)
    assert code == 0, f"{argv} in {image}: exit {code}: {err}"
    return out


def test_every_image_runs_as_an_unprivileged_user(images: Images) -> None:
    names = (images.connector, images.kafka, images.postgres, images.prometheus)
    users = {name: _output(name, "id", "-un") for name in names}
    assert users == {
        images.connector: "kec",
        images.kafka: "kafka",
        images.postgres: "postgres",
        images.prometheus: "prometheus",
    }
    uids = {name: int(_output(name, "id", "-u")) for name in names}
    assert all(uid != 0 for uid in uids.values()), uids


def test_the_connector_image_carries_no_development_tooling(images: Images) -> None:
    # .dockerignore keeps devkit/ out of the build context; its commands' entry points are
    # still in the package's metadata, and the CLI leaves them out without a traceback.
    code, _, err = _run(images.connector, "python3", "-c", "import devkit")
    assert code == 1 and "No module named 'devkit'" in err, err
    listing = _output(images.connector, "event-connector", "--help")
    commands = {line.split()[0] for line in listing.splitlines() if line.startswith("  ")}
    assert "run" in commands and not commands & {"dev-broker", "demo"}, commands
    code, _, err = _run(images.connector, "event-connector", "demo")
    assert code == 2
    assert "command 'demo' is installed but does not load" in err and "Traceback" not in err


def test_the_connector_image_runs_event_connector_with_a_documented_config_path(
    images: Images,
) -> None:
    assert "Turn Kafka events into workflow actions" in _output(
        images.connector, "event-connector", "--help"
    )
    client = docker.DockerClient(base_url=engine_address())
    try:
        config = client.images.get(images.connector).attrs["Config"]
    finally:
        client.close()
    assert config["Entrypoint"] == ["event-connector"]
    assert config["Cmd"] == ["run", "-c", "/etc/kec/connector.yaml"]
    assert config["User"] == "kec"
    assert "/var/lib/kec" in config["Volumes"]
    assert config["Healthcheck"]["Test"][0] == "CMD"
    # Without a mounted config, the default command names the missing file (exit 2).
    code, _, err = _run(images.connector, *config["Entrypoint"], *config["Cmd"])
    assert code == 2
    assert "/etc/kec/connector.yaml" in err


def test_kafka_and_postgres_images_turn_healthy(
    images: Images, kafka: KafkaContainer, report: Callable[[str], None]
) -> None:
    # The Kafka node is up (the fixture waited for metadata from the host); Docker's own
    # health check, which reads the broker's start-up line, agrees.
    waited = wait_healthy(kafka.container, timeout=120)
    report(f"kafka image: healthy {waited:.1f}s after it answered metadata from the host")
    node = PostgresContainer(images.postgres)
    started = time.monotonic()
    node.start()
    try:
        answered = time.monotonic() - started
        wait_healthy(node.container, timeout=120)
        report(
            f"postgres image: accepts connections {answered:.1f}s after start, "
            f"healthy after {time.monotonic() - started:.1f}s"
        )
    finally:
        node.close()


def test_the_connector_image_turns_healthy_and_serves_its_probes(
    images: Images,
    network: Network,
    kafka: KafkaContainer,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    config = tmp_path / "connector.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            kafka: {{bootstrap_servers: "{kafka.internal_address()}"}}
            group_id: g-{uuid.uuid4().hex[:8]}
            namespaces: {{default: {{topics: [t-{uuid.uuid4().hex[:8]}]}}}}
            checkpoint: {{backend: sqlite, path: /var/lib/kec/checkpoints.db}}
            targets: {{log: {{type: log}}}}
            rules: [{{name: all, key: "*", action: start, workflow: w}}]
            metrics: {{host: 0.0.0.0, port: 9464}}
            """
        )
    )
    from devkit.server import free_port

    port = free_port()
    started = time.monotonic()
    with connector_container(
        images.connector, network, ["run", "-c", "/etc/kec/connector.yaml"],
        config=config, publish={9464: port},
    ) as container:  # fmt: skip
        assert health(container) == "starting"

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(answers, timeout=120, interval=0.2, what="/healthz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; connector logs:\n{logs(container)}") from None
        first_ok = time.monotonic() - started
        wait_healthy(container, timeout=120)
        healthy = time.monotonic() - started
        body = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
        assert body["status"] == "ready"
        assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).json() == {"status": "alive"}
        assert "kec_records_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    report(
        f"connector image: /healthz answers {first_ok:.1f}s after start, Docker reports "
        f"healthy after {healthy:.1f}s (health check every 5s)"
    )
