"""Each engine in a virtual environment of its own, from PyPI, pinned, cached.

The engines (Airflow's ~130 packages, Prefect's ~100) pin versions that fight the
connector's own (pydantic, httpx, starlette…), so each one gets its own venv under
``~/.cache/kafka-event-connector/engines/<engine>-<hash of its pins>`` (override the
folder with ``KEC_ENGINES_CACHE``). A changed pin file makes a new venv; one whose build
did not finish (no ``.ready`` file) is built again, and a file lock keeps two test
sessions from building the same one at once.

``python -m tests.engines.venvs [ENGINE...]`` builds them (``make engines`` does).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

PINS = Path(__file__).resolve().parent / "pins"
ENGINES = ("temporal", "airflow", "prefect")
_READY = ".ready"


def cache_root() -> Path:
    default = Path.home() / ".cache" / "kafka-event-connector" / "engines"
    return Path(os.environ.get("KEC_ENGINES_CACHE", default)).expanduser()


def venv_dir(engine: str) -> Path:
    pins = (PINS / f"{engine}.txt").read_bytes()
    return cache_root() / f"{engine}-{hashlib.sha256(pins).hexdigest()[:12]}"


def ensure_venv(engine: str) -> Path:
    """The engine's venv, built first if missing (minutes for Airflow, once)."""
    target = venv_dir(engine)
    if (target / _READY).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{engine}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / _READY).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)  # an unfinished build
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
        print(f"installing {engine} into {target} (pins: {PINS / (engine + '.txt')})")
        subprocess.run(
            [
                str(target / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
                str(PINS / f"{engine}.txt"),
            ],
            check=True,
        )
        (target / _READY).write_text("ok\n")
    return target


def main(argv: list[str]) -> int:
    for engine in argv or ENGINES:
        if engine not in ENGINES:
            print(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}", file=sys.stderr)
            return 2
        print(f"{engine}: {ensure_venv(engine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
