"""The project's Docker images, and ``make images`` (``python -m devkit.images``).

Five images, each built only when what goes into it changed:

* ``kec-base:bookworm``: Debian bookworm (minbase) made with ``debootstrap`` from Debian's
  mirror and ``docker import``-ed, so nothing needs an image registry. It stands in for the
  public ``debian:bookworm-slim`` / ``python:3.11-slim-bookworm`` the Dockerfiles default
  to. ``KEC_BASE_IMAGE=python:3.11-slim-bookworm`` (any Debian bookworm image) skips it.
* ``kec-kafka:<kafka.version>`` (``docker/kafka``): the broker the ``dev-broker`` command
  runs, same pinned manifest, same ``server.properties``; its jars are the dev broker's
  cache (:func:`devkit.broker.resolve_jars`) copied into ``docker/kafka/libs``.
* ``kec-postgres:<PG_MAJOR>`` (``docker/postgres``): Debian's PostgreSQL.
* ``kec-prometheus:<version>`` (``docker/prometheus``): Debian's Prometheus with the
  compose stack's scrape config and the connector's alert rules, checked by ``promtool``
  while it builds.
* ``kafka-event-connector:<version>`` (``docker/Dockerfile``, the repository as context):
  the connector, its dependencies installed from wheels downloaded on the host into
  ``docker/wheels`` (pip inside the build has no CA bundle for PyPI here).

Each image also gets the tag ``latest`` (what ``docker/compose.yaml`` runs by default).
Names can be overridden with ``KEC_KAFKA_IMAGE``, ``KEC_POSTGRES_IMAGE``,
``KEC_PROMETHEUS_IMAGE`` and ``KEC_CONNECTOR_IMAGE``, the variables compose reads too.

The cache key of an image is a SHA-256 over its inputs: the files of its build context,
its build arguments and the id of the base image it is built on. It is stored in the
label :data:`INPUTS_LABEL`; an image whose label matches is not rebuilt, so a second
``make images`` with nothing changed takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devkit.broker import resolve_jars
from devkit.errors import ImageBuildError
from devkit.project import (
    DOCKER_DIR,
    ROOT,
    cache_root,
    connector_image,
    kafka_image,
    kafka_version,
    postgres_image,
    project_version,
    prometheus_image,
)
from kec.errors import ConnectorError

log = logging.getLogger(__name__)

INPUTS_LABEL = "io.kafka-event-connector.inputs"
BASE_IMAGE = "kec-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The wheels in docker/wheels are for the image's interpreter, whatever runs this script.
WHEEL_PYTHON = "3.11"
WHEEL_ABI = "cp311"
_MANYLINUX = [f"manylinux_2_{minor}" for minor in range(36, 16, -1)]  # bookworm: glibc 2.36
_MANYLINUX += ["manylinux2014", "manylinux2010", "manylinux1", "linux"]


def _package_dirs() -> list[Path]:
    """The top-level packages the connector image installs: those the distribution ships
    (pyproject's packages.find.include) that .dockerignore leaves in the build context (it
    keeps devkit, the development tooling, out)."""
    with (ROOT / "pyproject.toml").open("rb") as handle:
        patterns = tomllib.load(handle)["tool"]["setuptools"]["packages"]["find"]["include"]
    names = {str(p).rstrip("*") for p in patterns} - _ignored_in_context()
    return sorted(ROOT / name for name in names if (ROOT / name / "__init__.py").is_file())


def _ignored_in_context() -> set[str]:
    """The names .dockerignore keeps out of the connector image's build context."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def _files(paths: Iterable[Path]) -> list[Path]:
    """Every file under ``paths`` (files or folders), minus caches and generated artefacts."""
    found: list[Path] = []
    for path in paths:
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            parts = set(file.relative_to(ROOT).parts)
            if file.is_file() and "__pycache__" not in parts and file.suffix != ".pyc":
                found.append(file)
    return found


def digest(files: Iterable[Path], extra: Sequence[str] = ()) -> str:
    """SHA-256 over the files' paths (relative to the repository) and contents, and ``extra``."""
    sha = hashlib.sha256()
    for file in sorted(files):
        sha.update(str(file.relative_to(ROOT)).encode() + b"\0")
        sha.update(hashlib.sha256(file.read_bytes()).digest())
    for item in extra:
        sha.update(item.encode() + b"\0")
    return sha.hexdigest()


@dataclass
class Image:
    """One image to build: its tags, context, Dockerfile, cache inputs and build args."""

    name: str
    context: Path
    dockerfile: Path
    inputs: list[Path]
    build_args: dict[str, str] = field(default_factory=dict)
    # Earlier stages of a multi-stage Dockerfile, tagged so that their layers stay cached
    # (untagged, the pruning after a build would take them).
    stages: tuple[str, ...] = ()

    @property
    def repository(self) -> str:
        return self.name.rsplit(":", 1)[0] if ":" in self.name.rsplit("/", 1)[-1] else self.name

    @property
    def tags(self) -> list[str]:
        latest = f"{self.repository}:latest"
        return [self.name] if self.name == latest else [self.name, latest]


class Docker:
    """The ``docker`` command line, as the images are built with it (output to a log)."""

    def __init__(self, executable: str | None = None, *, log_dir: Path) -> None:
        self._exe = executable
        self._log_dir = log_dir

    @property
    def exe(self) -> str:
        if self._exe is None:
            found = shutil.which("docker")
            if found is None:
                raise ImageBuildError(
                    "docker not found on PATH: install a Docker engine (Debian: apt-get install "
                    "docker.io) and start it"
                )
            self._exe = found
        return self._exe

    def check_engine(self) -> None:
        done = subprocess.run(
            [self.exe, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise ImageBuildError(
                f"no Docker engine answers ({done.stderr.strip() or done.stdout.strip()}); "
                "start dockerd (.ci/run shows how) or set DOCKER_HOST"
            )

    def inspect(self, image: str, template: str) -> str | None:
        """``docker image inspect -f TEMPLATE IMAGE``, or None when there is no such image."""
        done = subprocess.run(
            [self.exe, "image", "inspect", "-f", template, image],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def image_id(self, image: str) -> str | None:
        return self.inspect(image, "{{.Id}}")

    def inputs_of(self, image: str) -> str | None:
        value = self.inspect(image, f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}')
        return value or None

    def size_mb(self, image: str) -> float:
        size = self.inspect(image, "{{.Size}}")
        return int(size) / 1e6 if size else 0.0

    def run_logged(self, name: str, argv: list[str], *, stdin: int | None = None) -> None:
        """Run a build step with its output in ``<log_dir>/<name>.log``; fail with its tail."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        path = self._log_dir / f"{name}.log"
        with path.open("wb") as out:
            done = subprocess.run(
                argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, timeout=3600, check=False
            )
        if done.returncode != 0:
            tail = "\n".join(path.read_text(errors="replace").splitlines()[-25:])
            raise ImageBuildError(
                f"{argv[0]} {argv[1]} for {name} failed (exit {done.returncode}); "
                f"log {path}:\n{tail}"
            )


def _log_dir() -> Path:
    return cache_root() / "images"


def build_base(docker: Docker, *, mirror: str) -> str:
    """``kec-base:bookworm`` from debootstrap, unless an image with the same recipe is there."""
    script = DOCKER_DIR / "base" / "rootfs.sh"
    inputs = digest([script], [mirror])
    if docker.inputs_of(BASE_IMAGE) == inputs:
        return "up to date"
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "debootstrap not found: it makes the local base image (apt-get install debootstrap), "
            "or set KEC_BASE_IMAGE to a Debian bookworm image you have"
        )
    scratch = Path(tempfile.mkdtemp(prefix="kec-rootfs-"))
    rootfs = scratch / "rootfs"
    try:
        docker.run_logged("base-debootstrap", ["sh", str(script), str(rootfs), mirror])
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            docker.run_logged(
                "base-import",
                [
                    docker.exe,
                    "import",
                    "--change",
                    'CMD ["/bin/bash"]',
                    "--change",
                    f"LABEL {INPUTS_LABEL}={inputs}",
                    "-",
                    BASE_IMAGE,
                ],
                stdin=tar.stdout.fileno(),
            )
        finally:
            tar.stdout.close()
            tar.wait(60)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return "built"


def stage_jars(target: Path) -> None:
    """The dev broker's resolved jars, copied into the Kafka image's context."""
    jars = resolve_jars()
    for old in target.glob("*.jar"):
        old.unlink()
    for jar in sorted(jars.glob("*.jar")):
        shutil.copy2(jar, target / jar.name)


def stage_wheels(target: Path) -> None:
    """Wheels of the connector's dependencies for the image (CPython 3.11, glibc 2.36).

    Downloaded again only when the pins or the dependency list changed (a stamp file
    records what the wheels there were downloaded for).
    """
    pins = [ROOT / "pyproject.toml", ROOT / "constraints.txt", DOCKER_DIR / "build-constraints.txt"]
    stamp, wanted = target / ".inputs", digest(pins, [WHEEL_PYTHON, *_MANYLINUX])
    if stamp.exists() and stamp.read_text() == wanted and any(target.glob("*.whl")):
        return
    stamp.unlink(missing_ok=True)
    for old in target.glob("*.whl"):
        old.unlink()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    scratch = Path(tempfile.mkdtemp(prefix="kec-wheel-"))
    try:
        subprocess.run(
            [*pip, "wheel", "--no-deps", "-w", str(scratch), str(ROOT)],
            check=True,
            timeout=900,
        )
        (project,) = scratch.glob("*.whl")
        platforms = [arg for tag in _MANYLINUX for arg in ("--platform", f"{tag}_x86_64")]
        subprocess.run(
            [
                *pip,
                "download",
                "--only-binary=:all:",
                "--python-version",
                WHEEL_PYTHON,
                "--implementation",
                "cp",
                "--abi",
                WHEEL_ABI,
                "--abi",
                "abi3",
                "--abi",
                "none",
                *platforms,
                "-c",
                str(ROOT / "constraints.txt"),
                "-c",
                str(DOCKER_DIR / "build-constraints.txt"),
                "-d",
                str(target),
                str(project),
                "setuptools",
                "wheel",
            ],
            check=True,
            timeout=900,
        )
        (target / project.name).unlink(missing_ok=True)  # the image builds it from source
        stamp.write_text(wanted)
    except subprocess.CalledProcessError as exc:
        raise ImageBuildError(f"downloading the wheels for the image failed: {exc}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def images(base: str) -> list[Image]:
    kafka_dir, pg_dir = DOCKER_DIR / "kafka", DOCKER_DIR / "postgres"
    prom_dir = DOCKER_DIR / "prometheus"
    kafka_files = [p for p in _files([kafka_dir]) if p.parent.name != "libs"]
    return [
        Image(
            kafka_image(),
            kafka_dir,
            kafka_dir / "Dockerfile",
            kafka_files,
            {"BASE_IMAGE": base, "KAFKA_VERSION": kafka_version(kafka_dir / "pom.xml")},
            stages=("jars",),
        ),
        Image(
            postgres_image(),
            pg_dir,
            pg_dir / "Dockerfile",
            _files([pg_dir]),
            {"BASE_IMAGE": base},
        ),
        Image(
            prometheus_image(),
            prom_dir,
            prom_dir / "Dockerfile",
            _files([prom_dir]),
            {"BASE_IMAGE": base},
        ),
        Image(
            connector_image(),
            ROOT,
            DOCKER_DIR / "Dockerfile",
            _files(
                [
                    *_package_dirs(),
                    ROOT / "pyproject.toml",
                    ROOT / "constraints.txt",
                    ROOT / "README.md",
                    ROOT / ".dockerignore",
                    ROOT / "examples" / "quickstart.yaml",
                    DOCKER_DIR / "Dockerfile",
                    DOCKER_DIR / "healthcheck.py",
                    DOCKER_DIR / "build-constraints.txt",
                ]
            ),
            {"BASE_IMAGE": base, "VERSION": project_version()},
            stages=("build",),
        ),
    ]


def build_image(docker: Docker, image: Image, base_id: str) -> str:
    args = [f"{k}={v}" for k, v in sorted(image.build_args.items())]
    inputs = digest(image.inputs, [*args, base_id])
    if docker.inputs_of(image.name) == inputs:
        for tag in image.tags[1:]:
            docker.run_logged("tag", [docker.exe, "tag", image.name, tag])
        return "up to date"
    if image.context == ROOT:
        stage_wheels(DOCKER_DIR / "wheels")
    elif image.context.name == "kafka":
        stage_jars(image.context / "libs")
    common = [docker.exe, "build", "--network", "host", "-f", str(image.dockerfile)]
    common += [item for arg in args for item in ("--build-arg", arg)]
    name = image.name.replace("/", "_").replace(":", "-")
    for stage in image.stages:
        tag = f"{image.repository}-{stage}:cache"
        docker.run_logged(
            f"{name}-{stage}", [*common, "--target", stage, "-t", tag, str(image.context)]
        )
    argv = [*common, "--label", f"{INPUTS_LABEL}={inputs}"]
    argv += [item for tag in image.tags for item in ("-t", tag)]
    docker.run_logged(name, [*argv, str(image.context)])
    return "built"


def build_all(*, base_image: str | None, mirror: str, say: Callable[[str], None] = print) -> None:
    """Build (or confirm up to date) the base and the four images, one line each."""
    out = say
    docker = Docker(log_dir=_log_dir())
    docker.check_engine()
    started = time.monotonic()
    base = base_image or BASE_IMAGE
    if base_image is None:
        step = time.monotonic()
        state = build_base(docker, mirror=mirror)
        out(f"{BASE_IMAGE:<34} {state} ({time.monotonic() - step:.1f}s)")
    base_id = docker.image_id(base)
    if base_id is None:
        raise ImageBuildError(
            f"base image {base} is not there: pull it first (docker pull {base}) or leave "
            "KEC_BASE_IMAGE unset to build the local one"
        )
    for image in images(base):
        step = time.monotonic()
        state = build_image(docker, image, base_id)
        out(
            f"{image.name:<34} {state} ({time.monotonic() - step:.1f}s, "
            f"{docker.size_mb(image.name):.0f} MB)"
        )
    # Images that lost their tags to this run's builds carry the base's label: that is how
    # they, and nobody else's, are found.
    docker.run_logged(
        "prune", [docker.exe, "image", "prune", "-f", "--filter", f"label={INPUTS_LABEL}"]
    )
    out(f"images ready in {time.monotonic() - started:.1f}s (build logs in {_log_dir()})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.images",
        description="Build the project's Docker images (make images); each only when its "
        "inputs changed.",
    )
    parser.add_argument(
        "--base-image",
        default=os.environ.get("KEC_BASE_IMAGE") or None,
        help="A Debian bookworm image to build on instead of the local debootstrap base "
        "(env KEC_BASE_IMAGE).",
    )
    parser.add_argument(
        "--mirror",
        default=os.environ.get("KEC_DEBIAN_MIRROR") or DEBIAN_MIRROR,
        help=f"Debian mirror for the local base (env KEC_DEBIAN_MIRROR) [{DEBIAN_MIRROR}].",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        build_all(base_image=args.base_image, mirror=args.mirror)
    except ConnectorError as exc:
        print(f"make images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
