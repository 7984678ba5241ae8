"""Connector processes run from one config file, started, signalled and stopped by a test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT, pipeline_processes


def unreached_at_start(code: int | None, log: str) -> bool:
    """Whether a process that exited ``code`` with ``log`` stopped at its start because no
    broker answered: ``run`` and ``gateway`` say so and exit 1 rather than wait, so that
    a wrong address is said at once; a restart policy starts them again."""
    ending = log.rstrip().rpartition("\n")[2]
    return code == 1 and ending.startswith("error: cannot reach Kafka at ")


@dataclass
class Fleet:
    """Connector processes sharing one config file (one group, one store)."""

    config: Path
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # More options of a member's ``run`` (``--processes 2``, ``--no-gateway``, ...).
    options: dict[str, list[str]] = field(default_factory=dict)

    def start(self, member: str) -> None:
        """Start ``member`` in a process group of its own (see :meth:`signal`)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("KEC_CRASH_AT", None)
        more = self.options.get(member, [])
        with open(self.logs / f"{member}.log", "ab") as log:
            self.procs[member] = subprocess.Popen(
                [sys.executable, "-m", "connector", "run", "-c", str(self.config),
                 "--instance-id", member, *more],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,
            )  # fmt: skip

    def signal(self, member: str, sig: signal.Signals, *, group: bool = False) -> None:
        """``sig`` to ``member``'s process, or with ``group`` to its process group: a
        supervisor and its pipeline processes at once, as a container's kill, pause or
        the terminal's Ctrl-Z would."""
        proc = self.procs[member]
        if group and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # the group ended meanwhile
                os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait(30)

    def catches(self, member: str, sig: signal.Signals) -> bool:
        """Whether ``member``'s process has its own handler for ``sig`` yet (``SigCgt`` in
        /proc): a process still starting dies of a SIGTERM instead of stopping cleanly."""
        try:
            status = Path(f"/proc/{self.procs[member].pid}/status").read_text()
        except OSError:
            return False
        caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt"))
        return bool(int(caught, 16) & (1 << (sig - 1)))

    def children(self, member: str) -> list[int]:
        """The pipeline processes of ``member`` when it runs ``pipeline.processes`` > 1."""
        return pipeline_processes(self.procs[member].pid)

    def alive(self) -> None:
        for member, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{member}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{member} exited {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # a paused group's too
                    os.killpg(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
