"""A real single-node Apache Kafka broker for development and tests (see docs/architecture.md).

Where the broker comes from, in order (:func:`provide_kafka`; ``KEC_BROKER=external|
docker|jvm`` forces one, see :mod:`devkit.containers`):

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: that cluster, untouched.
2. A Docker engine answers and has the project's Kafka image (``make images``, built
   from the same manifest): a container, started with testcontainers. An engine without
   the image, or a container that fails to start, falls back to 3 with one log line.
3. Otherwise: Apache Kafka's own jars, pinned by ``docker/kafka/pom.xml``, resolved once
   from Maven Central into a cache outside the repository and run with Java 17 as one
   KRaft broker+controller on free loopback ports (:class:`DevBroker`).

Every failure to start names its cause (no Java, no Maven, jar resolution, port in use,
broker exited, timeout) in a :class:`~devkit.errors.DevBrokerError`; nothing waits
without a bound. The JVM is stopped on :meth:`DevBroker.close`, at interpreter exit, and
(Linux) by the kernel when the starting process dies, so no broker outlives its owner.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from devkit import containers
from devkit import security as modes
from devkit.errors import DevBrokerError, DockerUnavailable
from devkit.project import cache_root, kafka_image, kafka_version, made_once, manifest_dir
from devkit.security import Material, Security
from devkit.server import LocalServer, free_port
from kec.kafka.settings import Connection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaCluster:
    """Where a Kafka cluster answers and what it is."""

    bootstrap_servers: str
    kind: str  # "external", "testcontainers" or "local-jvm"
    version: str  # "unknown" when the cluster does not tell us
    why: str = ""  # why this source was chosen, in a few words
    security: Security = "plaintext"  # see devkit.security
    # librdkafka properties a client needs beside bootstrap.servers (SASL, SSL, files).
    client_properties: dict[str, str] = field(default_factory=dict, hash=False)

    def client_config(self) -> dict[str, str]:
        """Every librdkafka property a client of this cluster needs."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.client_properties}

    def connection(self) -> Connection:
        """This cluster as the product's clients take it."""
        return Connection(self.bootstrap_servers, self.client_properties)

    def kafka_yaml(self) -> str:
        """The ``kafka:`` block of a connector config that reaches this cluster."""
        return modes.kafka_yaml(self.bootstrap_servers, self.client_properties)


def resolve_jars(manifest: Path | None = None, *, timeout: float = 900.0) -> Path:
    """Return a folder with the broker's jars, resolving them with Maven the first time.

    The cache entry is named after the manifest's hash, so changing the pin resolves anew;
    it is filled in a scratch folder and renamed into place, so an interrupted resolution
    is never mistaken for a complete one. A file lock serialises concurrent callers.
    """
    manifest = manifest or manifest_dir()
    pom = manifest / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    root = cache_root()
    target = root / f"kafka-{kafka_version(pom)}-{digest}" / "libs"
    mvn = shutil.which("mvn")
    if mvn is None and not _has_jars(target):
        raise DevBrokerError(
            "Maven (mvn) not found on PATH: it resolves the Kafka broker's jars. Install it "
            "(apt-get install maven), run 'make test' which installs it, or point "
            "KAFKA_BOOTSTRAP_SERVERS at a running cluster"
        )

    def resolve(scratch: Path) -> Path:
        assert mvn is not None
        log.info("resolving Apache Kafka jars from %s into %s", pom, target)
        cmd = [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={scratch}", "-DincludeScope=runtime"]  # fmt: skip
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DevBrokerError(f"jar resolution did not finish in {timeout:.0f}s") from exc
        if done.returncode != 0 or not _has_jars(scratch):
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise DevBrokerError(
                f"jar resolution failed (mvn exit {done.returncode}) for {pom}:\n{tail}"
            )
        return scratch

    return made_once(target, _has_jars, resolve, "resolve-")


def _has_jars(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("kafka_2.13-*.jar"))


def java_executable() -> str:
    """The ``java`` to run the broker with, checked to be version 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise DevBrokerError(
            "Java not found (no JAVA_HOME, no java on PATH): the local Kafka broker needs "
            "Java 17+ (apt-get install openjdk-17-jre-headless), or set KAFKA_BOOTSTRAP_SERVERS"
        )
    out = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=60, check=False
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):
            major = int(match.group(2))
        if major < 17:
            raise DevBrokerError(f"{java} is Java {major}; Apache Kafka 4 needs Java 17+")
    return java


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64, never starting with ``-``.

    One id in 64 would start with ``-``, which the storage tool's argument parser reads as
    an option ("argument --cluster-id/-t: expected one argument"); Kafka's own
    ``Uuid.randomUuid`` redraws such ids, and so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class DevBroker(LocalServer[KafkaCluster]):
    """One Apache Kafka 4 broker+controller in KRaft mode, as a child JVM.

    ``start()`` formats storage in a scratch folder (``workdir``, kept; else a temporary
    one), starts the JVM and returns once the broker answers a metadata request;
    ``close()`` stops it (SIGTERM, then SIGKILL) and removes a temporary scratch folder.
    The life cycle is :class:`~devkit.server.LocalServer`'s.

    ``advertised_port``: the broker still listens on ``port`` but tells clients to connect
    to ``127.0.0.1:<advertised_port>`` (a fault-injecting proxy in front of it, for tests),
    which :attr:`bootstrap_servers` then names; the broker's traffic to itself (e.g.
    transaction markers) goes through a listener of its own, not through the proxy.

    ``security``: the client listener's mode (:mod:`devkit.security`): ``plaintext``,
    ``sasl-ssl`` or ``mtls``; the certificates and the user are made in the scratch folder
    and :meth:`cluster` carries what a client needs. A kept ``workdir`` is started again
    only in the mode it was formatted in.

    ``kill()`` crashes the JVM (for tests of what a broker outage does) and keeps its data;
    ``start()`` then brings the same broker back on the same ports, through Kafka's log
    recovery.
    """

    error = DevBrokerError
    what = "the broker JVM"
    not_ready = "the broker did not answer"
    bind_failures = ("Address already in use", "BindException")

    def __init__(
        self,
        jars: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        workdir: Path | None = None,
        manifest: Path | None = None,
        start_timeout: float = 90.0,
        heap: str = "768m",
        advertised_port: int | None = None,
        security: str = "plaintext",
    ) -> None:
        super().__init__(start_timeout=start_timeout)
        self._security = modes.mode(security)
        self._material: Material | None = None
        self._jars = jars
        self._port = port
        self._advertised_port = advertised_port
        self._controller_port = controller_port
        self._workdir = workdir
        self._manifest = manifest
        self._heap = heap
        self._version = "unknown"

    @property
    def bootstrap_servers(self) -> str:
        if self._proc is None or self._port is None:
            raise DevBrokerError("the dev broker is not running")
        return f"127.0.0.1:{self._advertised_port or self._port}"

    @property
    def log_file(self) -> Path | None:
        return self._scratch / "logs" / "server.log" if self._scratch else None

    @property
    def security(self) -> Security:
        return self._security

    def cluster(self) -> KafkaCluster:
        return KafkaCluster(
            self.bootstrap_servers,
            "local-jvm",
            self._version,
            security=self._security,
            client_properties=modes.client_properties(self._security, self._material),
        )

    def _describe(self) -> KafkaCluster:
        return self.cluster()

    def _ports(self) -> list[int | None]:
        return [self._port, self._controller_port]

    def _log_files(self) -> list[Path]:
        assert self._scratch is not None
        return [self._scratch / "logs" / "console.log", self._scratch / "logs" / "server.log"]

    def _start(self) -> None:
        java = java_executable()
        manifest = self._manifest or manifest_dir()
        self._check_free({"port": self._port, "controller port": self._controller_port})
        self._port = self._port or free_port()
        self._controller_port = self._controller_port or free_port()
        scratch = self._scratch_dir("kec-kafka-", self._workdir)
        data, logs = scratch / "data", scratch / "logs"
        logs.mkdir(exist_ok=True)
        formatted = (data / "meta.properties").exists()
        self._check_mode(scratch, formatted)
        if self._security != "plaintext":
            self._material = modes.material(scratch / "security")
        props = scratch / "server.properties"
        props.write_text(
            Template((manifest / "server.properties").read_text()).substitute(
                port=self._port, controller_port=self._controller_port, data_dir=data
            )
            + self._listeners()
            + modes.broker_properties(self._security, self._material)
        )
        jvm = [
            java,
            f"-Xmx{self._heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            # Kafka's operations guide runs G1 with large regions (16M for a 6 GB heap): a
            # produce request of a few hundred KiB is then not a humongous object. At this
            # heap's default (1M) a kafka target's bursts kept G1's concurrent marking
            # busy in the broker's worst runs (1.4 s of its CPU in one 300,000-event run
            # of bench row (e)); the rows' rates stay within their noise either way.
            "-XX:G1HeapRegionSize=4m",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={logs}",
            f"-Dlog4j2.configurationFile={manifest / 'log4j2.properties'}",
            "-cp",
            f"{self._jars}/*",
        ]
        if not formatted:
            self._format(jvm, props)
            (scratch / "security-mode").write_text(self._security + "\n")
        self._launch([*jvm, "kafka.Kafka", str(props)], log=logs / "console.log")
        self._version = self._read_version()
        assert self._proc is not None
        log.info(
            "Apache Kafka %s (local JVM, pid %d, %s) at %s in %s",
            self._version,
            self._proc.pid,
            self._security,
            self.bootstrap_servers,
            self._scratch,
        )

    def _check_mode(self, scratch: Path, formatted: bool) -> None:
        """Refuse to start kept data in another mode than it was formatted in: the SCRAM
        user exists only if it was formatted for sasl-ssl."""
        if not formatted:
            return
        marker = scratch / "security-mode"
        was = marker.read_text().strip() if marker.exists() else "plaintext"
        if was != self._security:
            raise DevBrokerError(
                f"the broker data in {scratch} was made with --security {was}: start it "
                f"with that mode, or use another data folder for {self._security}"
            )

    def _format(self, jvm: list[str], props: Path) -> None:
        """Format the KRaft storage of a new broker."""
        cmd = [*jvm, "kafka.tools.StorageTool", "format", "-t", new_cluster_id(),
               "-c", str(props), "--standalone",
               *modes.format_arguments(self._security, self._material)]  # fmt: skip
        fmt = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if fmt.returncode != 0:
            self._cleanup()
            raise DevBrokerError(f"formatting KRaft storage failed:\n{fmt.stderr[-2000:]}")

    def _listeners(self) -> str:
        """Properties that replace the template's listeners (later keys win) when clients
        are to connect elsewhere or securely: the client listener is then named after its
        protocol, and an INTERNAL listener (PLAINTEXT, loopback) keeps the broker's own
        traffic direct, past any proxy and any authentication."""
        if self._advertised_port is None and self._security == "plaintext":
            return ""
        internal = free_port()
        while internal in (self._port, self._controller_port):
            internal = free_port()
        client = modes.LISTENER[self._security]
        advertised = self._advertised_port or self._port
        return (
            f"\n# DevBroker(advertised_port={self._advertised_port}, "
            f"security={self._security}): clients use the {client} listener.\n"
            f"listeners={client}://127.0.0.1:{self._port},INTERNAL://127.0.0.1:{internal},"
            f"CONTROLLER://127.0.0.1:{self._controller_port}\n"
            f"advertised.listeners={client}://127.0.0.1:{advertised},"
            f"INTERNAL://127.0.0.1:{internal}\n"
            f"listener.security.protocol.map={client}:{client},INTERNAL:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT\n"
            "inter.broker.listener.name=INTERNAL\n"
        )

    def _ready(self) -> bool:
        from kec import kafka

        assert self._port is not None
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", self._port)) != 0:
                return False
        # Through the client listener, as a client of the mode: a secured listener that
        # refuses its own credentials never becomes ready.
        config = {
            "bootstrap.servers": f"127.0.0.1:{self._port}",
            **modes.client_properties(self._security, self._material),
        }
        admin = kafka.admin(config)
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception as exc:  # not answering metadata yet
            self._last_error = str(exc)
            return False

    def _read_version(self) -> str:
        log_file = self.log_file
        if log_file and log_file.exists():
            match = re.search(r"Kafka version: (\S+)", log_file.read_text(errors="replace"))
            if match:
                return match.group(1)
        return "unknown"


@contextlib.contextmanager
def provide_kafka(*, start_timeout: float = 90.0) -> Iterator[KafkaCluster]:
    """Yield a running Kafka cluster chosen as the module docstring says; stop what was
    started."""
    try:
        choice = containers.choose("kafka", kafka_image)
    except DockerUnavailable as exc:
        raise DevBrokerError(str(exc)) from exc
    if choice.source == "external":
        yield KafkaCluster(
            os.environ["KAFKA_BOOTSTRAP_SERVERS"], "external", "unknown", choice.reason
        )
        return
    why = choice.reason
    if choice.source == "docker":
        container = containers.KafkaContainer(choice.image, start_timeout=max(start_timeout, 120))
        failed = containers.start_or_fall_back(container, choice, "the local JVM broker")
        if failed is None:
            try:
                labels = containers.local_image(choice.image) or {}
                version = labels.get("org.opencontainers.image.version", "unknown")
                log.info("Apache Kafka %s in Docker (%s) at %s", version, choice.image,
                         container.bootstrap_servers)  # fmt: skip
                yield KafkaCluster(container.bootstrap_servers, "testcontainers", version, why)
            finally:
                container.close()
            return
        why = failed
    log.info("Kafka broker: the local JVM broker (%s)", why)
    with DevBroker(resolve_jars(), start_timeout=start_timeout) as broker:
        yield dataclasses.replace(broker.cluster(), why=why)
