"""Rows that run ``event-connector run -c FILE`` processes as a user starts them and watch
them from outside (``/proc``): the scale row, rows (i) and the memory row of ``make bench``.

* **Scale** (``--scale 1 2 3``): N instances in one consumer group on one PostgreSQL
  store, each with its own ``log`` target file, reading a topic empty at first. The clock
  starts once the store names N owners (the group has settled), the events are produced
  then (a producer outruns the instances many times over, so the row measures them), and
  it stops when the action lines of all N files reach the events' count; beside
  events/s, the CPU-seconds the instances used per 1,000 events (user + system of every
  instance process, from ``/proc/PID/stat``, over the same window): what one more
  instance costs and gives.
* **Processes** (``--processes 1 2``, rows (i)): one instance with ``pipeline.processes``
  N on SQLite, one action per event to a Kafka topic (``kafka`` target, as row (e)). It
  starts on an empty topic; once every process owns partitions the instance's process
  group is stopped (``SIGSTOP``), the events are produced, and the clock starts as the
  group is continued (``SIGCONT``); it stops when the actions topic holds one record per
  event. So, as (e) and (f), it reads records that were there before it started, with no
  producer sharing the cores.
* **Memory** (``--memory-events``): one instance, SQLite, ``log`` target, on a topic of
  that many events; its resident set (``VmRSS``) once a tenth of them is delivered and
  again at the end. Flat memory is the claim: nothing per event is kept once settled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from checkpoint import open_store
from kec.errors import CheckpointError
from kec.kafka import watermarks

_ROOT = Path(__file__).resolve().parents[1]
STOP_WARNING = 8.0  # seconds rows (i) may keep the instance stopped without a rebalance
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ScaleRow:
    instances: int
    events: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu_seconds / self.events if self.events else 0.0


@dataclass
class MemoryRow:
    events: int
    rss_early_mib: float  # after a tenth of the events
    rss_end_mib: float

    @property
    def growth(self) -> float:
        return self.rss_end_mib / self.rss_early_mib - 1 if self.rss_early_mib else 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (its threads included, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _config(run_dir: Path, bootstrap: str, topic: str, group: str, store: str, batch: int,
            linger_ms: int, processes: int = 1,
            actions_topic: str | None = None) -> Path:  # fmt: skip
    """A config of one rule, an action per event, to a ``log`` file in ``run_dir`` (or, with
    ``actions_topic``, to that topic by a ``kafka`` target)."""
    target = (
        f"{{type: kafka, topic: {actions_topic}}}"
        if actions_topic
        else f"{{type: log, path: {run_dir}/actions.jsonl}}"
    )
    config = run_dir / "connector.yaml"
    config.write_text(
        f"""
kafka: {{bootstrap_servers: "{bootstrap}"}}
group_id: {group}
namespaces:
  bench: {{topics: [{topic}]}}
checkpoint: {store}
pipeline: {{batch_size: {batch}, linger_ms: {linger_ms}, processes: {processes}}}
targets:
  out: {target}
rules:
  - {{name: all, namespace: bench, key: "*", action: notify, target: out}}
"""
    )
    return config


class _Lines:
    """Counts the lines a process appends to a file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path, self.count, self._position = path, 0, 0

    def poll(self) -> int:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self._position)
                data = f.read()
            self._position += len(data)
            self.count += data.count(b"\n")
        return self.count


@contextmanager
def _running(configs: list[Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    processes = []
    try:
        for config in configs:
            with open(config.parent / "run.log", "wb") as log:
                # A session of its own: its process group (the processes of
                # pipeline.processes) can be stopped and continued as one.
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "connector", "run", "-c", str(config)],
                    stderr=log, env=env, start_new_session=True,
                ))  # fmt: skip
        yield processes
    finally:
        for process in processes:
            _signal_group(process, signal.SIGCONT)  # a stopped process cannot stop
            process.terminate()
        for process in processes:
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # exited
        os.killpg(process.pid, sig)


class _TopicCount:
    """Records in a topic: the sum of its partitions' high watermarks, asked of the broker."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count"})
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def poll(self) -> int:
        return sum(watermarks(self._consumer, tp, timeout=10)[1] for tp in self._tps)

    def close(self) -> None:
        self._consumer.close()


def _await_owners(
    processes: list[subprocess.Popen[bytes]], store_url: str, owners: int, deadline: float,
    what: str,
) -> None:  # fmt: skip
    """Until the store names ``owners`` owners (the group has settled)."""
    while _owners(store_url) < owners:
        _check(processes, deadline, what)
        time.sleep(0.05)  # polling the store another process writes


def _check(processes: list[subprocess.Popen[bytes]], deadline: float, what: str) -> None:
    for process in processes:
        if process.poll() is not None:
            raise RuntimeError(f"{what}: an instance exited {process.returncode}")
    if time.monotonic() > deadline:
        raise RuntimeError(f"{what}: timed out")


def _owners(store_url: str) -> int:
    try:
        with open_store(store_url, create=False) as store:
            return len({p.owner for p in store.partitions() if p.owner})
    except CheckpointError:  # not created yet
        return 0


def _settled_then_fed(
    configs: list[Path], store_url: str, owners: int, bootstrap: str, topic: str, count: int,
    keys: int, what: str,
) -> tuple[float, float]:  # fmt: skip
    """Start ``run -c`` on each config; once the store names ``owners`` owners, produce
    ``count`` events to ``topic`` and wait for that many action lines in the configs'
    folders. Seconds from the produce to the last line, and the CPU-seconds the processes
    used meanwhile. The records are built before the clock starts: the processes share
    the cores with the producer, which should cost them its sends only."""
    from bench.throughput import build_records, send_records

    lines = [_Lines(c.parent / "actions.jsonl") for c in configs]
    records = build_records(count, keys)
    deadline = time.monotonic() + 1800
    with _running(configs) as ps:
        _await_owners(ps, store_url, owners, deadline, what)
        started, cpu0 = time.perf_counter(), sum(cpu_seconds(p.pid) for p in ps)
        send_records(bootstrap, topic, records)
        while sum(f.poll() for f in lines) < count:
            _check(ps, deadline, what)
            time.sleep(0.02)  # polling files other processes write
        return time.perf_counter() - started, sum(cpu_seconds(p.pid) for p in ps) - cpu0


def run_scale(
    instances: int, bootstrap: str, count: int, store_url: str, workdir: Path, *,
    partitions: int, keys: int, batch: int, linger_ms: int,
) -> ScaleRow:  # fmt: skip
    """``instances`` × ``run -c`` on one PostgreSQL store ``store_url`` (fresh), one group,
    a new topic of ``count`` events produced once the group has settled."""
    from bench.throughput import create_topic

    topic = create_topic(bootstrap, partitions)
    group = f"scale-{uuid.uuid4().hex[:8]}"
    store = f'{{backend: postgres, dsn: "{store_url}"}}'
    dirs = [workdir / f"scale-{instances}-{i}-{uuid.uuid4().hex[:4]}" for i in range(instances)]
    for d in dirs:
        d.mkdir()
    configs = [_config(d, bootstrap, topic, group, store, batch, linger_ms) for d in dirs]
    elapsed, cpu = _settled_then_fed(
        configs, store_url, instances, bootstrap, topic, count, keys,
        f"scale row, {instances} instance(s)",
    )  # fmt: skip
    return ScaleRow(instances, count, elapsed, cpu)


def run_processes(
    processes: int, bootstrap: str, count: int, workdir: Path, *, partitions: int, keys: int,
    batch: int, linger_ms: int,
) -> float:  # fmt: skip
    """One ``run -c`` with ``pipeline.processes`` on SQLite, a ``kafka`` target, on
    ``count`` events produced while it was stopped (the module's docstring): the seconds
    from its ``SIGCONT`` until the actions topic holds ``count`` records."""
    from bench.throughput import build_records, create_topic, send_records

    topic = create_topic(bootstrap, partitions)
    actions = create_topic(bootstrap, partitions)
    run_dir = workdir / f"processes-{processes}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    store_url = f"sqlite:///{run_dir}/checkpoints.db"
    store = f"{{backend: sqlite, path: {run_dir}/checkpoints.db}}"
    config = _config(run_dir, bootstrap, topic, f"proc-{uuid.uuid4().hex[:8]}", store, batch,
                     linger_ms, processes, actions_topic=actions)  # fmt: skip
    what = f"processes {processes}"
    records = build_records(count, keys)
    written = _TopicCount(bootstrap, actions, partitions)
    deadline = time.monotonic() + 1800
    try:
        with _running([config]) as (process,):
            _await_owners([process], store_url, processes, deadline, what)
            # Stopped for the produce only: a few seconds for the default --events, within
            # the session timeout of a supervisor's members (10 s; Kafka's 45 s for one
            # process). Longer, the group rebalances and the row says so.
            stopped = time.perf_counter()
            _signal_group(process, signal.SIGSTOP)
            send_records(bootstrap, topic, records)
            started = time.perf_counter()
            _signal_group(process, signal.SIGCONT)
            if started - stopped > STOP_WARNING:
                print(f"  ({what}: stopped {started - stopped:.1f} s to produce, past a "
                      "member's session timeout: the row includes a rebalance)")  # fmt: skip
            while written.poll() < count:
                _check([process], deadline, what)
                time.sleep(0.05)  # asking the broker: each poll costs it a request
            return time.perf_counter() - started
    finally:
        written.close()


def run_memory(
    bootstrap: str, topic: str, count: int, workdir: Path, batch: int, linger_ms: int
) -> MemoryRow:
    """One ``run -c`` (SQLite, ``log`` target) over ``count`` events; its RSS after
    ``count // 10`` actions and after all."""
    run_dir = workdir / f"memory-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir()
    store = f"{{backend: sqlite, path: {run_dir}/checkpoints.db}}"
    config = _config(run_dir, bootstrap, topic, f"mem-{uuid.uuid4().hex[:8]}", store, batch,
                     linger_ms)  # fmt: skip
    lines = _Lines(run_dir / "actions.jsonl")
    deadline = time.monotonic() + 3600
    early: float | None = None
    with _running([config]) as (process,):
        while lines.poll() < count:
            _check([process], deadline, "memory row")
            if early is None and lines.count >= count // 10:
                early = rss_mib(process.pid)
            time.sleep(0.05)  # polling a file another process writes
        end = rss_mib(process.pid)
    return MemoryRow(count, early or end, end)
