"""Connector processes run from one config file, started, signalled and stopped by a test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import ROOT, pipeline_processes


@dataclass
class Fleet:
    """Connector processes sharing one config file (one group, one store)."""

    config: Path
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, member: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("KEC_CRASH_AT", None)
        with open(self.logs / f"{member}.log", "ab") as log:
            self.procs[member] = subprocess.Popen(
                [sys.executable, "-m", "connector", "run", "-c", str(self.config),
                 "--instance-id", member],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def signal(self, member: str, sig: signal.Signals) -> None:
        self.procs[member].send_signal(sig)
        if sig == signal.SIGKILL:
            self.procs[member].wait(30)

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
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
