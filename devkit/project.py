"""The checkout the tooling serves: where its files are, what it pins, what its images are.

The one place for the images' names: the choice of broker and database
(:mod:`devkit.containers`), the image builds (:mod:`devkit.images`) and the container tests
ask here. ``KEC_KAFKA_IMAGE``, ``KEC_POSTGRES_IMAGE``, ``KEC_CONNECTOR_IMAGE`` and
``KEC_PROMETHEUS_IMAGE`` override the names (docker/compose.yaml reads the same variables).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path

from devkit.errors import DevBrokerError, ImageBuildError

ROOT = Path(__file__).resolve().parent.parent
DOCKER_DIR = ROOT / "docker"
MANIFEST_DIR = DOCKER_DIR / "kafka"


def manifest_dir() -> Path:
    """The folder holding the pinned Maven manifest and the broker config template."""
    override = os.environ.get("KEC_KAFKA_MANIFEST_DIR")
    path = Path(override) if override else MANIFEST_DIR
    if not (path / "pom.xml").is_file():
        raise DevBrokerError(
            f"no Kafka manifest at {path}/pom.xml: run from a source checkout of "
            "kafka-event-connector or set KEC_KAFKA_MANIFEST_DIR"
        )
    return path


def kafka_version(pom: Path) -> str:
    """The Apache Kafka version a Maven manifest pins (its ``kafka.version`` property)."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not match:
        raise DevBrokerError(f"{pom}: no <kafka.version> property")
    return match.group(1).strip()


def postgres_major() -> str:
    """The PostgreSQL major version the PostgreSQL image is built with."""
    dockerfile = DOCKER_DIR / "postgres" / "Dockerfile"
    match = re.search(r"^ARG PG_MAJOR=(\d+)$", dockerfile.read_text(), re.MULTILINE)
    if not match:
        raise ImageBuildError(f"{dockerfile}: no 'ARG PG_MAJOR=<major>' line")
    return match.group(1)


def prometheus_version() -> str:
    """The Prometheus version (major.minor) Debian's package in the Prometheus image has."""
    dockerfile = DOCKER_DIR / "prometheus" / "Dockerfile"
    match = re.search(r"^ARG PROMETHEUS_VERSION=([\d.]+)$", dockerfile.read_text(), re.MULTILINE)
    if not match:
        raise ImageBuildError(f"{dockerfile}: no 'ARG PROMETHEUS_VERSION=<version>' line")
    return match.group(1)


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def kafka_image() -> str:
    """The project's Kafka image for this checkout's pinned broker (``kec-kafka:<version>``)."""
    return os.environ.get("KEC_KAFKA_IMAGE") or (
        f"kec-kafka:{kafka_version(manifest_dir() / 'pom.xml')}"
    )


def postgres_image() -> str:
    """The project's PostgreSQL image (``kec-postgres:<major>``)."""
    return os.environ.get("KEC_POSTGRES_IMAGE") or f"kec-postgres:{postgres_major()}"


def connector_image() -> str:
    """The connector's image (``kafka-event-connector:<version>``)."""
    return os.environ.get("KEC_CONNECTOR_IMAGE") or f"kafka-event-connector:{project_version()}"


def prometheus_image() -> str:
    """The Prometheus image of the compose stack (``kec-prometheus:<version>``)."""
    return os.environ.get("KEC_PROMETHEUS_IMAGE") or f"kec-prometheus:{prometheus_version()}"


def cache_root() -> Path:
    """Where downloads and build logs are kept, outside the checkout: ``KEC_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/kafka-event-connector`` (``~/.cache`` by default)."""
    base = os.environ.get("KEC_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kafka-event-connector"


def made_once(
    target: Path, ready: Callable[[Path], bool], make: Callable[[Path], Path], prefix: str
) -> Path:
    """``target`` in the cache, made the first time by ``make(scratch)``, which fills a
    scratch folder of the cache and returns the folder to rename into place (``ready`` says
    whether a folder is complete). Whatever ``make`` raises leaves no scratch behind, an
    interrupted run is never taken for a complete one, and a file lock serialises
    concurrent callers (tests in several processes, ``make jars``)."""
    if ready(target):
        return target
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".resolve.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready(target):
            return target
        scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        try:
            made = make(scratch)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(made, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target
