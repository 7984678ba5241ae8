"""A real schema registry for development and tests: Apicurio Registry, run from a cache.

Apicurio speaks the Confluent Schema Registry API under ``/apis/ccompat/v7``, which
``confluent_kafka.schema_registry.SchemaRegistryClient`` talks to; its storage here is its
default, H2 in memory, so each start is empty. ``docker/registry/pom.xml`` pins it; Apicurio
publishes its application unbuilt, so :func:`build_registry` runs Quarkus's build step on it
with Maven once, into a cache outside the repository (``python -m devkit.registry`` does
only that, for ``make jars``). :class:`DevRegistry` runs the result with Java on a free
loopback port; its life cycle is :class:`~devkit.server.LocalServer`'s (stopped on close,
at interpreter exit, and with its owner).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devkit.errors import DevRegistryError
from devkit.project import DOCKER_DIR, cache_root, made_once
from devkit.server import LocalServer, free_port

log = logging.getLogger(__name__)

MANIFEST_DIR = DOCKER_DIR / "registry"
CCOMPAT_PATH = "/apis/ccompat/v7"


def apicurio_version(pom: Path) -> str:
    """The Apicurio Registry version a manifest pins (its ``apicurio.version`` property)."""
    match = re.search(r"<apicurio\.version>([^<]+)</apicurio\.version>", pom.read_text())
    if not match:
        raise DevRegistryError(f"{pom}: no <apicurio.version> property")
    return match.group(1).strip()


def build_registry(manifest: Path | None = None, *, timeout: float = 1500.0) -> Path:
    """Return the folder holding the built registry (``quarkus-run.jar``), building it the
    first time.

    The cache entry is named after the hash of the manifest and its Maven settings, so a
    changed pin builds anew; the build runs in a scratch folder whose result is renamed into
    place, so an interrupted build is never taken for a complete one. A file lock serialises
    concurrent callers. A failed build raises with the tail of Maven's output; the whole
    output stays in ``registry-build.log`` in the cache.
    """
    manifest = manifest or MANIFEST_DIR
    pom, settings = manifest / "pom.xml", manifest / "settings.xml"
    if not pom.is_file() or not settings.is_file():
        raise DevRegistryError(
            f"no registry manifest at {manifest} (pom.xml and settings.xml): run from a "
            "source checkout of kafka-event-connector"
        )
    digest = hashlib.sha256(pom.read_bytes() + settings.read_bytes()).hexdigest()[:12]
    root = cache_root()
    target = root / f"apicurio-{apicurio_version(pom)}-{digest}"
    mvn = shutil.which("mvn")
    if mvn is None and not _built(target):
        raise DevRegistryError(
            "Maven (mvn) not found on PATH: it builds the schema registry. Install it "
            "(apt-get install maven) or run 'make jars', which installs it"
        )
    build_log = root / "registry-build.log"

    def build(scratch: Path) -> Path:
        assert mvn is not None
        shutil.copy(pom, scratch / "pom.xml")
        shutil.copy(settings, scratch / "settings.xml")
        log.info("building Apicurio Registry from %s into %s (once)", pom, target)
        cmd = [mvn, "-B", "-s", str(scratch / "settings.xml"), "-f", str(scratch / "pom.xml"),
               "package", "-Dquarkus.package.type=fast-jar"]  # fmt: skip
        try:
            with open(build_log, "wb") as out:
                done = subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
                )
        except subprocess.TimeoutExpired as exc:
            raise DevRegistryError(
                f"the registry build did not finish in {timeout:.0f}s (log: {build_log})"
            ) from exc
        built = scratch / "target" / "quarkus-app"
        if done.returncode != 0 or not _built(built):
            lines = build_log.read_text(errors="replace").strip().splitlines()
            tail = "\n".join(line for line in lines if "Download" not in line)
            tail = "\n".join(tail.splitlines()[-20:])
            raise DevRegistryError(
                f"the registry build failed (mvn exit {done.returncode}) for {pom} "
                f"(log: {build_log}):\n{tail}"
            )
        return built

    return made_once(target, _built, build, "registry-build-")


def _built(folder: Path) -> bool:
    return (folder / "quarkus-run.jar").is_file()


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise DevRegistryError(
            "Java not found (no JAVA_HOME, no java on PATH): the schema registry needs "
            "Java 17 (apt-get install openjdk-17-jre-headless)"
        )
    return java


class DevRegistry(LocalServer[str]):
    """Apicurio Registry as a child JVM on a loopback port, its storage in memory.

    ``start()`` builds the registry first if the cache lacks it (unless ``app`` names a
    built folder), starts it and returns :attr:`url` once ``GET <url>/subjects`` answers
    200; ``close()`` (or ``stop()``) stops it and removes its scratch folder, which holds
    its output (:attr:`log_file`).
    """

    error = DevRegistryError
    what = "the registry JVM"
    not_ready = "the schema registry did not answer"
    bind_failures = ("Address already in use", "Port already bound")

    def __init__(
        self,
        app: Path | None = None,
        *,
        port: int | None = None,
        start_timeout: float = 120.0,
        heap: str = "512m",
    ) -> None:
        super().__init__(start_timeout=start_timeout)
        self._app = app
        self._port = port
        self._heap = heap

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL, as ``SchemaRegistryClient`` takes it."""
        if self._proc is None or self._port is None:
            raise DevRegistryError("the dev schema registry is not running")
        return f"http://127.0.0.1:{self._port}{CCOMPAT_PATH}"

    @property
    def log_file(self) -> Path | None:
        """The registry's output while its scratch folder exists."""
        return self._scratch / "registry.log" if self._scratch else None

    def stop(self) -> None:
        """Stop the registry (as :meth:`close`)."""
        self.close()

    def _describe(self) -> str:
        return self.url

    def _ports(self) -> list[int | None]:
        return [self._port]

    def _log_files(self) -> list[Path]:
        assert self._scratch is not None
        return [self._scratch / "registry.log"]

    def _start(self) -> None:
        java = _java()
        self._check_free({"port": self._port})
        app = self._app or build_registry()
        self._port = self._port or free_port()
        scratch = self._scratch_dir("kec-registry-")
        argv = [
            java,
            f"-Xmx{self._heap}",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self._port}",
            "-jar",
            str(app / "quarkus-run.jar"),
        ]
        self._launch(argv, log=scratch / "registry.log", cwd=scratch)
        assert self._proc is not None
        log.info("Apicurio Registry (pid %d) at %s", self._proc.pid, self.url)

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self._port}{CCOMPAT_PATH}/subjects"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError) as exc:
            self._last_error = str(exc)
            return False


def main() -> int:
    """Build the registry into the cache (``make jars``) and say where it is."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        app = build_registry()
    except DevRegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Apicurio Registry ready in {app}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
