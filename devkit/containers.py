"""Kafka and PostgreSQL in Docker for development and tests, and the choice of source.

Where the broker (``KEC_BROKER``) and the database (``KEC_POSTGRES``) come from:

========== ===================================================================
``auto``   the default: ``KAFKA_BOOTSTRAP_SERVERS`` / ``PG_DSN`` when set; else a
           container when a Docker engine answers *and* the project's image is
           already there (``make images``; it is never pulled on its own); else
           the local JVM broker / Debian PostgreSQL. A Docker engine without the
           image, or one whose container fails to start, falls back with one log
           line.
``external`` the variable must be set; nothing is started.
``docker`` a container, whatever else there is; a missing image is pulled, and a
           failure is an error (no fallback).
``jvm``    (``KEC_BROKER``) / ``local`` (``KEC_POSTGRES``): the local process.
========== ===================================================================

``KEC_NO_DOCKER=1`` is ``auto`` without the Docker step. The images are
:func:`devkit.project.kafka_image` and :func:`devkit.project.postgres_image`
(``KEC_KAFKA_IMAGE``, ``KEC_POSTGRES_IMAGE`` override them).

Containers (:class:`KafkaContainer`, :class:`PostgresContainer`) are started with
testcontainers' ``DockerContainer``, without its Ryuk reaper (its image is pulled from a
registry): each container carries a label naming its owner process, is removed on
``close()`` and at interpreter exit, and containers of owners that died (kill -9) are
removed by the next start. Host ports are published on 127.0.0.1 only; readiness is
waited for with a bound, checking the container is still running.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from devkit.errors import DevBrokerError, DevPostgresError, DockerUnavailable
from devkit.server import free_port, poll_until
from kec.errors import ConnectorError

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

log = logging.getLogger(__name__)

OWNER_LABEL = "io.kafka-event-connector.owner"
Service = Literal["kafka", "postgres"]
_SETTINGS: dict[Service, tuple[str, str, str]] = {
    # service: (choice variable, its name for "the local process", the external variable)
    "kafka": ("KEC_BROKER", "jvm", "KAFKA_BOOTSTRAP_SERVERS"),
    "postgres": ("KEC_POSTGRES", "local", "PG_DSN"),
}


# -- the engine -----------------------------------------------------------------------


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers ``GET /_ping`` (the client binary alone is not enough).

    Asked over a plain socket: the docker SDK leaks its socket when no engine listens.
    """
    host = docker_host()
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").partition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            address = (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return sock.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK")
    except (OSError, ValueError):
        return False


def _sdk() -> Any:
    """The docker SDK module; DockerUnavailable when it is not installed."""
    try:
        import docker
    except ImportError as exc:  # the SDK comes with the test extra (testcontainers)
        raise DockerUnavailable(
            "the docker and testcontainers packages are not installed "
            "(pip install 'kafka-event-connector[test]')"
        ) from exc
    return docker


def _client() -> Any:
    """A docker SDK client for :func:`docker_host`; DockerUnavailable when there is none."""
    docker = _sdk()
    try:
        return docker.DockerClient(base_url=docker_host(), timeout=60)
    except Exception as exc:  # DockerException, or the HTTP layer's own errors
        raise DockerUnavailable(f"Docker engine at {docker_host()}: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "explanation", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def local_image(image: str) -> dict[str, str] | None:
    """The labels of ``image`` when the engine has it, None when it has not (no pull)."""
    docker = _sdk()
    client = _client()
    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound:
        return None
    except Exception as exc:  # DockerException, or the HTTP layer's own errors
        raise DockerUnavailable(f"Docker engine at {docker_host()}: {_first_line(exc)}") from exc
    finally:
        client.close()
    return dict(found.labels or {})


def pull(image: str) -> None:
    """Pull ``image``; DockerUnavailable with the engine's one-line reason if that fails."""
    client = _client()
    try:
        client.images.pull(image)
    except Exception as exc:  # DockerException, or the HTTP layer's own errors
        raise DockerUnavailable(f"cannot pull {image}: {_first_line(exc)}") from exc
    finally:
        client.close()


# -- the choice -----------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """Where a service comes from, and why, in one line (logged and shown by the tests)."""

    source: Literal["external", "docker", "local"]
    reason: str
    forced: bool = False
    image: str = ""


def choose(service: Service, image: Callable[[], str]) -> Choice:
    """Decide where ``service`` comes from, from the environment (see the module docstring).

    Raises the service's setting error (:class:`DockerUnavailable`) only for a forced
    ``docker`` that cannot be had, or a forced ``external`` without its variable.
    """
    variable, local_name, external_var = _SETTINGS[service]
    wanted = (os.environ.get(variable) or "auto").strip().lower()
    allowed = ("auto", "external", "docker", local_name)
    if wanted not in allowed:
        raise DockerUnavailable(f"{variable}={wanted!r}: expected one of {', '.join(allowed)}")
    external = os.environ.get(external_var)
    if wanted == "external":
        if not external:
            raise DockerUnavailable(f"{variable}=external but {external_var} is not set")
        return Choice("external", f"{external_var} (forced by {variable})", forced=True)
    if wanted == local_name:
        return Choice("local", f"forced by {variable}={local_name}", forced=True)
    if wanted == "docker":
        name = image()
        if not docker_available():
            raise DockerUnavailable(f"{variable}=docker but no Docker engine answers at "
                                    f"{docker_host()}")  # fmt: skip
        if local_image(name) is None:
            log.info("%s=docker: pulling %s", variable, name)
            pull(name)
        return Choice("docker", f"image {name} (forced by {variable})", forced=True, image=name)
    if external:
        return Choice("external", f"{external_var} is set")
    if os.environ.get("KEC_NO_DOCKER") == "1":
        return Choice("local", "KEC_NO_DOCKER=1")
    if not docker_available():
        return Choice("local", f"no Docker engine answers at {docker_host()}")
    name = image()
    try:
        present = local_image(name) is not None
    except DockerUnavailable as exc:
        return Choice("local", f"Docker engine unusable: {exc}")
    if not present:
        return Choice("local", f"the Docker engine has no image {name} ('make images' builds it)")
    return Choice("docker", f"image {name}", image=name)


# -- containers -----------------------------------------------------------------------


def process_start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' if it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner() -> str:
    """The owner label's value for this process: host, pid and the pid's start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{process_start_ticks(os.getpid())}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # not ours to judge
    return process_start_ticks(int(pid)) == ticks


def reap_orphans() -> int:
    """Remove containers whose owner process on this host is gone; return how many."""
    client = _client()
    removed = 0
    try:
        # Sparse: no inspection per container, which fails with 404 for one that another
        # process removes between the listing and its inspection.
        listed = client.containers.list(all=True, filters={"label": OWNER_LABEL}, sparse=True)
        for container in listed:
            labels = container.attrs.get("Labels") or {}
            if not _owner_alive(labels.get(OWNER_LABEL, "")):
                with contextlib.suppress(Exception):  # already being removed
                    container.remove(force=True, v=True)
                    removed += 1
    finally:
        client.close()
    if removed:
        log.info("removed %d container(s) left behind by processes that died", removed)
    return removed


class _ServiceContainer:
    """One container of the project's images: published on loopback, waited for, removed.

    Subclasses say which port to publish, the environment, and when the service is ready.
    ``start()`` retries with another host port when the chosen one was taken meanwhile.
    """

    port: int  # the container port published on 127.0.0.1
    internal_port: int  # the port other containers on the network use
    error: type[ConnectorError] = ConnectorError
    what = "service"

    def __init__(
        self,
        image: str,
        *,
        start_timeout: float = 120.0,
        network: Network | None = None,
        alias: str | None = None,
    ) -> None:
        self.image = image
        self._start_timeout = start_timeout
        self._network = network
        self._alias = alias
        self._container: DockerContainer | None = None
        self.host_port = 0

    def environment(self, host_port: int) -> dict[str, str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        import docker
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.container import DockerContainer

        testcontainers_config.ryuk_disabled = True  # no registry for its image; we reap
        # It logs "Pulling image" at INFO for every start, pulled or not; we say what we do.
        logging.getLogger("testcontainers").setLevel(logging.WARNING)
        try:
            reap_orphans()
        except DockerUnavailable as exc:
            raise self.error(f"{self.what} in Docker: {exc}") from exc
        for attempt in range(3):
            self.host_port = free_port()
            container = DockerContainer(
                self.image,
                env=self.environment(self.host_port),
                network=self._network,
                network_aliases=[self._alias] if self._alias else None,
                labels={OWNER_LABEL: owner()},
                name=f"kec-{self.what.lower()}-{uuid.uuid4().hex[:8]}",
            )
            container.ports[f"{self.port}/tcp"] = ("127.0.0.1", self.host_port)  # type: ignore[assignment]
            self._container = container
            try:
                container.start()
                break
            except Exception as exc:  # DockerException, or the HTTP layer's own errors
                self.close()
                taken = "already allocated" in str(exc) or "address already in use" in str(exc)
                if isinstance(exc, docker.errors.APIError) and taken and attempt < 2:
                    continue
                raise self.error(
                    f"{self.what} in Docker ({self.image}): {_first_line(exc)}"
                ) from exc
        atexit.register(self.close)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        def running() -> None:
            try:
                state = self.state()
            except Exception as exc:  # the engine went away, or removed the container
                raise self.error(f"{self.what} container: {_first_line(exc)}") from exc
            if state not in ("created", "running"):
                raise self.error(
                    f"{self.what} container ({self.image}) is {state}; last log lines:\n"
                    f"{self.logs_tail()}"
                )

        if poll_until(self.ready, timeout=self._start_timeout, check=running, interval=0.2):
            return
        raise self.error(
            f"{self.what} in Docker ({self.image}) was not ready within "
            f"{self._start_timeout:.0f}s; last log lines:\n{self.logs_tail()}"
        )

    @property
    def container(self) -> DockerContainer:
        if self._container is None:
            raise self.error(f"the {self.what} container is not started")
        return self._container

    def state(self) -> str:
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        return str(wrapped.status)

    def logs_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(Exception):
            out, err = self.container.get_logs()
            text = (out + err).decode(errors="replace").splitlines()
            return "\n".join(text[-lines:])
        return "(no logs)"

    def internal_address(self) -> str:
        """``host:port`` of the service for containers on the same Docker network."""
        if self._alias:
            return f"{self._alias}:{self.internal_port}"
        wrapped = self.container.get_wrapped_container()
        wrapped.reload()
        networks = wrapped.attrs["NetworkSettings"]["Networks"]
        address = next(iter(networks.values()))["IPAddress"]
        return f"{address}:{self.internal_port}"

    def close(self) -> None:
        """Remove the container and its volumes; idempotent."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):  # gone already, or the engine went away
                container.stop(force=True, delete_volume=True)


def start_or_fall_back(container: _ServiceContainer, choice: Choice, fallback: str) -> str | None:
    """Start ``container``: ``None`` once it runs, else why ``fallback`` is used instead
    (logged in one line). A forced ``docker`` choice raises rather than fall back."""
    try:
        container.start()
    except container.error as exc:
        if choice.forced:
            raise
        first = str(exc).splitlines()[0]
        log.warning("%s in Docker failed (%s); using %s instead", container.what, first, fallback)
        return f"{container.what} in Docker failed: {first}"
    return None


class KafkaContainer(_ServiceContainer):
    """The project's Kafka image (one KRaft node): the host reaches it on
    ``127.0.0.1:<host_port>``, containers on the same network on :meth:`internal_address`."""

    port = 9094
    internal_port = 9092
    what = "Kafka"
    error = DevBrokerError

    def environment(self, host_port: int) -> dict[str, str]:
        env = {"KAFKA_EXTERNAL_ADDRESS": f"127.0.0.1:{host_port}", "KAFKA_HEAP": "512m"}
        if self._alias:
            env["KAFKA_INTERNAL_HOST"] = self._alias
        return env

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.host_port}"

    def ready(self) -> bool:
        from kec import kafka

        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", self.host_port)) != 0:
                return False
        # Quiet: until Kafka listens, Docker's port proxy accepts and resets connections.
        admin = kafka.admin({"bootstrap.servers": self.bootstrap_servers, "log_level": 2})
        try:
            brokers = admin.list_topics(timeout=2).brokers
        except Exception:  # not answering metadata yet
            return False
        return any(f"{b.host}:{b.port}" == self.bootstrap_servers for b in brokers.values())


class PostgresContainer(_ServiceContainer):
    """The project's PostgreSQL image, superuser ``postgres`` with a random password."""

    port = 5432
    internal_port = 5432
    what = "PostgreSQL"
    error = DevPostgresError

    def __init__(self, image: str, **kwargs: Any) -> None:
        super().__init__(image, **kwargs)
        self._password = uuid.uuid4().hex

    def environment(self, host_port: int) -> dict[str, str]:
        return {"POSTGRES_PASSWORD": self._password}

    @property
    def dsn(self) -> str:
        """The superuser's DSN from the host."""
        return f"postgresql://postgres:{self._password}@127.0.0.1:{self.host_port}/postgres"

    def internal_dsn(self, dbname: str = "postgres") -> str:
        """The superuser's DSN for ``dbname`` from containers on the same network."""
        return f"postgresql://postgres:{self._password}@{self.internal_address()}/{dbname}"

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True
