"""Helpers of the container tests: run the connector image, read its files, wait on health."""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from devkit import containers
from devkit.containers import OWNER_LABEL, owner
from devkit.errors import DockerUnavailable
from devkit.project import connector_image, kafka_image, postgres_image, prometheus_image
from tests.support import wait_for

CONFIG_PATH = "/etc/kec/connector.yaml"


@functools.cache
def unavailable() -> str | None:
    """Why the container tests cannot run here, in one line; None when they can."""
    if not containers.docker_available():
        return f"no Docker engine answers at {containers.docker_host()}"
    names = (kafka_image(), postgres_image(), connector_image(), prometheus_image())
    try:
        missing = [name for name in names if containers.local_image(name) is None]
    except DockerUnavailable as exc:
        return str(exc)
    if missing:
        return f"the Docker engine has no image {', '.join(missing)} (run 'make images')"
    return None


@contextlib.contextmanager
def connector_container(
    image: str,
    network: Network,
    command: Sequence[str],
    *,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    publish: Mapping[int, int] | None = None,
) -> Iterator[DockerContainer]:
    """The connector image running ``command`` on ``network``; removed afterwards.

    ``config`` is mounted read-only at /etc/kec/connector.yaml; ``publish`` maps container
    ports to host ports on 127.0.0.1.
    """
    container = DockerContainer(
        image,
        command=list(command),
        env=dict(env or {}),
        network=network,
        labels={OWNER_LABEL: owner()},
        name=f"kec-test-connector-{uuid.uuid4().hex[:8]}",
    )
    if config is not None:
        container.with_volume_mapping(str(config), CONFIG_PATH, "ro")
    for port, host_port in (publish or {}).items():
        container.ports[f"{port}/tcp"] = ("127.0.0.1", host_port)  # type: ignore[assignment]
    container.start()
    try:
        yield container
    finally:
        container.stop(force=True, delete_volume=True)


def state(container: DockerContainer) -> dict[str, Any]:
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    return dict(wrapped.attrs["State"])


def health(container: DockerContainer) -> str:
    """The Docker health status: starting, healthy or unhealthy ('none' without a check)."""
    return str(state(container).get("Health", {}).get("Status", "none"))


def wait_healthy(container: DockerContainer, *, timeout: float = 180.0) -> float:
    """Seconds from now until Docker calls the container healthy; fails if it stops."""
    started = time.monotonic()

    def healthy() -> bool:
        current = state(container)
        assert current["Status"] == "running", f"container {current['Status']}: {logs(container)}"
        return bool(current.get("Health", {}).get("Status") == "healthy")

    wait_for(healthy, timeout=timeout, interval=0.2, what="the health check to pass")
    return time.monotonic() - started


def logs(container: DockerContainer, lines: int = 30) -> str:
    out, err = container.get_logs()
    return "\n".join((out + err).decode(errors="replace").splitlines()[-lines:])


def read_file(container: DockerContainer, path: str) -> str:
    """A file inside the container ('' while it does not exist)."""
    result = container.get_wrapped_container().exec_run(["cat", path], demux=False)
    return result.output.decode(errors="replace") if result.exit_code == 0 else ""
