"""Every core: ``pipeline.processes: N`` runs N pipeline processes as one instance.

The connector's hot path is Python, so one process uses one core. With ``processes`` above
1, ``event-connector run`` becomes a *supervisor*: it starts N child processes, each a
whole :class:`~connector.service.ConnectorService` (pipeline and dispatcher) that joins the
same consumer group with its own static member id (``INSTANCE-pI``, ``INSTANCE`` being
``pipeline.instance_id`` or ``HOST-PID`` of the supervisor), so Kafka gives each its share
of the partitions. The guarantees are those of N instances on one store: each partition is
claimed in the store under a new owner epoch by the child that gets it, and a child that
lost it is fenced by that epoch (docs/architecture.md, "Several processes in one instance").

The supervisor:

1. validates the config, creates the topics, and opens the checkpoint store (a SQLite
   store's file lock is the supervisor's, held for the whole run; its children open the
   file without it and take SQLite's write lock per transaction, as the tools do; the
   store is created or migrated once, here, before any child opens it);
2. serves what there is one of per instance: the metrics endpoint and ``/healthz`` (the
   children's numbers summed, their checks combined), the progress line, the HTTP
   gateway (the children read its topic, as ``run --no-gateway`` replicas do);
3. starts the children and restarts one that dies (backoff 1 s doubling to 30 s). A
   child that dies within :data:`EARLY` seconds of its start :data:`CRASH_LOOP` times in
   a row (a wrong password, a store that refuses it) stops the instance with exit 1, as
   one process would. On a SQLite store, a child stopped alone (SIGSTOP, a debugger) for
   longer than the group's session timeout is killed and restarted: it may hold the
   file's write lock, which no server can take from it as PostgreSQL does, and every
   sibling (and, once Kafka has given them its partitions, every partition) would wait
   for it; Kafka has evicted it from the group by then, so the kill takes nothing more;
4. on SIGTERM or Ctrl-C: SIGTERM to every child (each checkpoints and commits its batch,
   settles its deliveries and leaves), waits for them, then stops its servers and closes
   the store.

A child dies with its supervisor (``PR_SET_PDEATHSIG`` on Linux, and its control pipe's
end of file elsewhere): a SIGKILLed instance leaves no process consuming behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.common.heap import settle_for_service
from connector.metrics.core import COUNTERS, Health, Histogram, Snapshot
from kec.errors import ConnectorError

if TYPE_CHECKING:
    from connector.config import ConnectorConfig
    from connector.control import ConfigDiff, Control

__all__ = [
    "ChildSpec",
    "Supervisor",
    "counters_of",
    "member_id",
    "merge_health",
    "merge_snapshots",
    "serve_child",
]

log = logging.getLogger(__name__)

EARLY = 10.0  # seconds: a child that dies sooner after its start is failing to start
CRASH_LOOP = 3  # early deaths in a row that stop the instance
ASK_TIMEOUT = 2.0  # seconds a child has to answer a metrics or health question
KAFKA_SESSION_MS = 45_000  # Kafka's default session.timeout.ms
STOP_TIMEOUT = 120.0  # seconds children have to stop before they are killed
RELOAD_TIMEOUT = 150.0  # seconds a child has to apply a reload (it waits for its batch)

_PR_SET_PDEATHSIG = 1
_MAX_GAUGES = ("paused",)  # 0/1 per process: the instance is paused if one is
_MIN_GAUGES = ("kafka_connected", "store_up")  # up only if every process says so
_BY_NAME = (
    "queued_by_rule",
    "delivered_by_target",
    "failed_by_target",
    "dead_by_target",
    "throttled_seconds_by_target",
)  # counters per name, summed; in_flight_by_target is a gauge, summed but not kept


class SupervisorError(ConnectorError):
    """The children could not be kept running (a crash loop)."""


@dataclass(frozen=True)
class ChildSpec:
    """What a child needs to build its service (picklable: children are spawned)."""

    config: Path
    data_dir: Path | None
    instance_id: str
    index: int  # 1..N
    verbose: bool
    # The consumers' session.timeout.ms unless kafka.properties sets one (None: Kafka's).
    session_timeout_ms: int | None = None
    # The instance's state when the child starts (connector.control): the config text as
    # last validated (None: read the file), its rules version, what is paused.
    config_text: str | None = None
    rules_version: int = 1
    paused_rules: tuple[str, ...] = ()
    paused_targets: tuple[str, ...] = ()


def member_id(base: str, index: int) -> str:
    """The static member id (``group.instance.id``) of child ``index``."""
    return f"{base}-p{index}"


# With member ids of this supervisor's own (no instance id configured), a stopped instance's
# static members are never seen again: the group holds their partitions for a session,
# which must outlast a child's restart (~2 s), not a deploy (Kafka's default is 45 s).
GENERATED_MEMBER_SESSION_MS = 10_000


def default_base() -> str:
    """The member ids' base without ``pipeline.instance_id``: unique to this supervisor,
    stable across its children's restarts (so a restarted child gets its partitions back
    at once)."""
    return f"{socket.gethostname()}-{os.getpid()}"


# -- what the supervisor serves: the children's numbers, merged --------------------------


def merge_snapshots(snapshots: Sequence[Snapshot]) -> Snapshot:
    """One instance's numbers from its processes': counters and gauges summed (``paused``
    the largest, ``kafka_connected`` and ``store_up`` the smallest), histograms added
    bucket by bucket, lag per partition (a partition moving between children: the larger),
    partitions read per topic summed, actions in flight per target summed."""
    merged = Snapshot()
    for snap in snapshots:
        for key, value in snap.values.items():
            if key not in merged.values:
                merged.values[key] = value
            elif key in _MAX_GAUGES:
                merged.values[key] = max(merged.values[key], value)
            elif key in _MIN_GAUGES:
                merged.values[key] = min(merged.values[key], value)
            else:
                merged.values[key] += value
        for name in _BY_NAME:
            into: dict[str, int] = getattr(merged, name)
            for key, count in getattr(snap, name).items():
                into[key] = into.get(key, 0) + count
        for name, n in snap.in_flight_by_target.items():
            merged.in_flight_by_target[name] = merged.in_flight_by_target.get(name, 0) + n
        for tp, lag in snap.lag.items():
            merged.lag[tp] = max(lag, merged.lag.get(tp, 0))
        for topic, n in snap.partitions_by_topic.items():  # every child sees the same
            merged.partitions_by_topic[topic] = max(n, merged.partitions_by_topic.get(topic, 0))
        for topic, n in snap.owned_by_topic.items():  # each reads its own
            merged.owned_by_topic[topic] = merged.owned_by_topic.get(topic, 0) + n
        merged.delivery_seconds = _add(merged.delivery_seconds, snap.delivery_seconds)
        merged.store_write_seconds = _add(merged.store_write_seconds, snap.store_write_seconds)
    return merged


def _add(into: Histogram | None, more: Histogram | None) -> Histogram | None:
    """A new histogram holding both (the children's are never changed)."""
    if more is None:
        return into
    total = Histogram(more.buckets)
    if into is not None and into.buckets == more.buckets:
        total.counts = [a + b for a, b in zip(into.counts, more.counts, strict=True)]
        total.sum = into.sum + more.sum
    else:
        total.counts, total.sum = list(more.counts), more.sum
    return total


def counters_of(snapshot: Snapshot) -> Snapshot:
    """The part of ``snapshot`` that only grows (counters, histograms): what a process
    that died had counted, kept so the instance's counters do not go back."""
    return Snapshot(
        values={k: v for k, v in snapshot.values.items() if k in COUNTERS},
        **{name: dict(getattr(snapshot, name)) for name in _BY_NAME},
        delivery_seconds=_add(None, snapshot.delivery_seconds),
        store_write_seconds=_add(None, snapshot.store_write_seconds),
    )


def merge_health(answers: Sequence[Health | None]) -> Health:
    """Ready when every process is: each check passes in all of them, and ``processes``
    says every child is running and answered (None: it did not)."""
    checks: dict[str, bool] = {}
    for health in answers:
        for name, ok in (health.checks if health is not None else {}).items():
            checks[name] = checks.get(name, True) and ok
    checks["processes"] = bool(answers) and all(h is not None for h in answers)
    return Health(checks)


# -- the children ----------------------------------------------------------------------


class _Child:
    """One child process and the supervisor's end of its control pipe."""

    def __init__(
        self,
        spec: ChildSpec,
        main: Callable[[ChildSpec, multiprocessing.connection.Connection], None],
    ) -> None:
        self.spec = spec
        self._main = main
        self.process: BaseProcess | None = None
        self.conn: multiprocessing.connection.Connection | None = None
        self.started = 0.0
        self.early_deaths = 0
        self.restart_at = 0.0
        self.backoff = 1.0
        self.stopped_since: float | None = None  # first seen stopped (SIGSTOP)
        self._lock = threading.Lock()  # one question at a time on the pipe

    def start(self, context: Any, spec: ChildSpec | None = None) -> None:
        """Start the child as ``spec`` (default: its own)."""
        parent, child = context.Pipe()
        process = context.Process(
            target=self._main, args=(spec or self.spec, child), name=f"kec-p{self.spec.index}"
        )
        process.start()
        child.close()  # the child holds its end: our copy would hide its end of file
        self.process, self.conn, self.started = process, parent, time.monotonic()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def ask(self, question: object, timeout: float = ASK_TIMEOUT) -> Any:
        """The child's answer to ``question`` (``snapshot``, ``health``, or a control
        message of :func:`_answer`); None when it does not answer in time (starting,
        stopping, or gone)."""
        with self._lock:
            conn = self.conn
            if conn is None or not self.alive:
                return None
            try:
                while conn.poll():  # an answer that came after its question timed out
                    conn.recv()
                conn.send(question)
                if not conn.poll(timeout):
                    return None
                return conn.recv()
            except (EOFError, OSError):
                return None

    def terminate(self) -> None:
        if self.process is not None and self.process.pid is not None and self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)

    def reap(self) -> int | None:
        """Close the pipe of a child that exited; its exit code."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        process, self.process = self.process, None
        if process is None:
            return None
        process.join(0)
        code = process.exitcode
        process.close()
        return code


def serve_child(
    spec: ChildSpec,
    conn: multiprocessing.connection.Connection,
    build: Callable[[ChildSpec], Any],
) -> None:
    """The body of a child process: ``build(spec)`` (a not yet started
    :class:`~connector.service.ConnectorService`), run until SIGTERM, answering the
    supervisor's questions on ``conn`` meanwhile.

    Dies with the supervisor; SIGTERM stops it cleanly; Ctrl-C in a terminal reaches the
    whole process group, so a child leaves SIGINT to the supervisor, which stops it."""
    parent = os.getppid()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the supervisor
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if os.getppid() != parent:  # the supervisor died before the line above
        os._exit(1)
    logging.basicConfig(
        level=logging.DEBUG if spec.verbose else logging.INFO,
        format=f"%(asctime)s %(levelname)s [p{spec.index}] %(name)s: %(message)s",
    )
    try:
        service = build(spec)
        threading.Thread(
            target=_answer, args=(conn, service, stop), name="kec-control", daemon=True
        ).start()
        settle_for_service()
        service.run(stop)
    except ConnectorError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None


def _answer(
    conn: multiprocessing.connection.Connection, service: Any, stop: threading.Event
) -> None:
    """The child's side of its control pipe: answers questions until the pipe closes. A
    closed pipe means the supervisor is gone: stop (where PR_SET_PDEATHSIG is missing).

    Questions: ``"snapshot"``, ``"health"``; ``("reload", text, version)`` (answered
    with the :class:`~connector.control.ReloadResult`, or ``("error", message)``);
    ``("paused", rules, targets)`` (answered ``"ok"`` or ``("error", message)``)."""
    handlers: dict[str, Callable[[], object]] = {
        "snapshot": service.snapshot,
        "health": service.health,
    }
    while True:
        try:
            question = conn.recv()
        except (EOFError, OSError):
            stop.set()
            return
        if isinstance(question, tuple):
            answer = _control(service, question)
        else:
            handler = handlers.get(question)
            answer = handler() if handler is not None else None
        try:
            conn.send(answer)
        except (EOFError, OSError):
            stop.set()
            return


def _control(service: Any, message: tuple[Any, ...]) -> object:
    control = service.control
    try:
        if message[0] == "reload":
            return control.reload_text(message[1], message[2])
        if message[0] == "paused":
            control.set_paused(message[1], message[2])
            return "ok"
    except Exception as exc:  # the supervisor logs it and restarts this child
        return ("error", f"{type(exc).__name__}: {exc}")
    return ("error", f"unknown control message {message[0]!r}")


def is_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, SIGTSTP, a tracer); False where there
    is no ``/proc`` or no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return False
    # "PID (COMMAND) STATE ...": the command may hold anything, parentheses too.
    end = text.rfind(b")")
    return text[end + 2 : end + 3] in (b"T", b"t")


def session_seconds(properties: Mapping[str, Any], specs: Sequence[ChildSpec]) -> float:
    """The children's consumer session timeout: ``kafka.properties``' own, else the one
    the specs give, else Kafka's default."""
    configured = properties.get("session.timeout.ms")
    if configured is None:
        configured = next(
            (s.session_timeout_ms for s in specs if s.session_timeout_ms), KAFKA_SESSION_MS
        )
    return int(configured) / 1000


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# -- the supervisor ----------------------------------------------------------------------


class Supervisor:
    """Runs and watches N children (steps 3 and 4 of the module docstring); answers for
    them as one (:meth:`snapshot`, :meth:`health`). Nothing happens until :meth:`run`;
    :func:`connector.assembly.supervise` does steps 1 and 2 around it."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        child: Callable[[ChildSpec, multiprocessing.connection.Connection], None],
        *,
        poll: float = 0.5,
        config_text: str | None = None,
        stopped_limit: float | None = None,
    ) -> None:
        """``child``: the child processes' entry point, a module-level function (spawned
        children import it), given a spec and its end of the control pipe; it calls
        :func:`serve_child`. ``config_text``: the config file's content as validated,
        which children start with (else each reads the file). :attr:`control`, set by the
        assembly, reloads and pauses through :meth:`apply` and :meth:`set_paused`.
        ``stopped_limit``: seconds after which a child seen stopped is killed (step 3;
        None: never)."""
        self._children = [_Child(spec, child) for spec in specs]
        self._state_lock = threading.Lock()
        self._state: dict[str, Any] = {"config_text": config_text}
        self.control: Control | None = None
        self._poll = poll
        self._stopped_limit = stopped_limit
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._last: dict[int, Snapshot] = {}  # each child's last answer
        self._retired = Snapshot()  # the counts of children that died, added up

    @property
    def pids(self) -> list[int | None]:
        return [c.process.pid if c.process is not None else None for c in self._children]

    def snapshot(self) -> Snapshot:
        """The instance's numbers: its children's, and what the dead ones had counted
        (up to their last answer)."""
        answers = {c.spec.index: c.ask("snapshot") for c in self._children}
        with self._lock:
            for index, answer in answers.items():
                if isinstance(answer, Snapshot):
                    self._last[index] = answer
            return merge_snapshots([self._retired, *self._last.values()])

    def health(self) -> Health:
        answers = [c.ask("health") for c in self._children]
        return merge_health([a if isinstance(a, Health) else None for a in answers])

    # -- reload and pauses, for every child (connector.control) ---------------------------

    def _spec(self, child: _Child) -> ChildSpec:
        """The child's spec with the instance's state now: a child (re)started later
        starts with the reloaded config and the pauses."""
        with self._state_lock:
            return replace(child.spec, **self._state)

    def apply(self, config: ConnectorConfig, text: str, diff: ConfigDiff, version: int) -> None:
        """Validated once by :attr:`control`: every child applies ``text`` as rules
        version ``version``. The instance's state is the new one from now on, so a child
        that does not apply it (a target it cannot open, no answer) is restarted with it."""
        with self._state_lock:
            self._state.update(config_text=text, rules_version=version)
        for child in self._children:
            answer = child.ask(("reload", text, version), RELOAD_TIMEOUT)
            if child.process is None or not child.alive:
                continue  # (re)starting: it starts with the new state
            if isinstance(answer, tuple) or answer is None:
                why = answer[1] if isinstance(answer, tuple) else "no answer"
                log.error(
                    "pipeline process %d did not apply rules version %d (%s): restarting it",
                    child.spec.index, version, why,
                )  # fmt: skip
                child.terminate()

    def set_paused(self, rules: frozenset[str], targets: frozenset[str]) -> None:
        """Every child pauses exactly ``rules`` and ``targets``; one that does not answer
        is restarted (it starts with them)."""
        with self._state_lock:
            self._state.update(paused_rules=tuple(sorted(rules)),
                               paused_targets=tuple(sorted(targets)))  # fmt: skip
        for child in self._children:
            answer = child.ask(("paused", tuple(rules), tuple(targets)), RELOAD_TIMEOUT)
            if answer != "ok" and child.alive:
                log.error("pipeline process %d did not take the pauses (%s): restarting it",
                          child.spec.index, answer)  # fmt: skip
                child.terminate()

    def run(self, stop: threading.Event) -> None:
        """Start the children and keep them running until ``stop``; then stop them.
        Raises :class:`SupervisorError` on a crash loop (after stopping the others)."""
        try:
            for child in self._children:
                child.start(self._context, self._spec(child))
            log.info(
                "started %d pipeline processes (pids %s)",
                len(self._children),
                ", ".join(str(p) for p in self.pids),
            )
            while not stop.wait(self._poll):
                self._watch()
        finally:
            self._stop_children()

    def _watch(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.process is not None and not child.alive:
                self._died(child, now)
            elif child.process is not None and self._stopped_limit is not None:
                self._kill_if_stopped(child, now, self._stopped_limit)
            elif child.process is None and now >= child.restart_at:
                child.start(self._context, self._spec(child))
                log.info(
                    "restarted pipeline process %d (pid %s)",
                    child.spec.index,
                    self.pids[child.spec.index - 1],
                )

    def _kill_if_stopped(self, child: _Child, now: float, limit: float) -> None:
        pid = child.process.pid if child.process is not None else None
        if pid is None or not is_stopped(pid):
            child.stopped_since = None
            return
        if child.stopped_since is None:
            child.stopped_since = now
        elif now - child.stopped_since >= limit:
            log.error(
                "pipeline process %d (pid %d) has been stopped for %.0fs, past the group's "
                "session timeout, and may hold the SQLite store's write lock that the "
                "others wait for: killing it (it restarts)",
                child.spec.index, pid, now - child.stopped_since,
            )  # fmt: skip
            child.stopped_since = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _died(self, child: _Child, now: float) -> None:
        ran = now - child.started
        code = child.reap()
        with self._lock:
            last = self._last.pop(child.spec.index, None)
            if last is not None:
                self._retired = merge_snapshots([self._retired, counters_of(last)])
        index = child.spec.index
        if ran < EARLY:
            child.early_deaths += 1
            if child.early_deaths >= CRASH_LOOP:
                raise SupervisorError(
                    f"pipeline process {index} exited (code {code}) {child.early_deaths} "
                    f"times within {EARLY:g}s of its start; its log lines above say why"
                )
        else:
            child.early_deaths = 0
            child.backoff = 1.0
        log.warning(
            "pipeline process %d exited (code %s) after %.1fs; restarting it in %gs",
            index, code, ran, child.backoff,
        )  # fmt: skip
        child.restart_at = now + child.backoff
        child.backoff = min(30.0, child.backoff * 2)

    def _stop_children(self) -> None:
        running = [c for c in self._children if c.alive]
        for child in running:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            process = child.process
            if process is not None:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    log.error(
                        "pipeline process %d did not stop within %gs: killing it",
                        child.spec.index, STOP_TIMEOUT,
                    )  # fmt: skip
                    process.kill()
                    process.join(10)
        codes = {c.spec.index: c.reap() for c in self._children if c.process is not None}
        failed = {i: code for i, code in codes.items() if code not in (0, None)}
        if failed:
            log.warning("pipeline processes that did not stop cleanly: %s", failed)
        log.info("stopped %d pipeline processes", len(codes))
