"""One seeded nemesis run: three connector processes, their broker and their PostgreSQL
crashed, paused and lied to, while a workload flows; then every invariant is checked.

``random.Random(seed)`` decides the fault schedule (:func:`plan`) and the workload
(:func:`workload`); the same seed gives the same faults in the same order against the
same records. Only the timing is the machine's: each step waits for its planned second,
and a step that blocks (a broker restart, a recreated topic) delays the ones after it.

The faults:

* ``kill``: SIGKILL one member, then start it again under the same instance id;
* ``stop`` / ``cont``: SIGSTOP one member past the group's session timeout, then SIGCONT:
  a zombie that wakes up without its partitions;
* ``term``: SIGTERM one member, as ``docker stop`` or a rolling deploy does, which must
  exit 0 within :data:`TERM_TIMEOUT` seconds; then start it again;
* ``broker``: SIGKILL the Kafka JVM, wait, start it again on the same port and data;
* ``gateway``: SIGKILL the standalone ``event-connector gateway``, wait, start it again
  on the same port (the members run ``--no-gateway`` and read its topic);
* ``pg_kill`` / ``pg_start``: SIGKILL PostgreSQL (postmaster and backends), then crash
  recovery on the same port and data;
* ``acks_on`` / ``acks_off``: the members' PostgreSQL proxy swallows each COMMIT's answer
  with a probability (the server committed, the client sees its connection drop);
* ``recreate``: the second topic of the namespace is deleted and created again with fewer
  records than it had, which the members must stop on; the driver then runs
  ``partitions reset`` as an operator would, and the new records fire under new ids;
* ``replay``: an operator runs ``event-connector replay --from-offset 0`` over every topic
  (after the reset), beside the faults, until it can reach Kafka and the store: with the
  rules unchanged it must queue no action, and nothing it does may deliver one.

A member that stops on a fatal Kafka error (its consumer fenced for good) is started
again, as a supervisor would; any other exit fails the run. The report counts them.

The target is a webhook (:class:`~tests.chaos.receiver.Receiver`, which refuses some first
tries), or with ``target="kafka"`` a ``kafka`` target whose actions topic is read back
(:class:`~tests.chaos.receiver.TopicReceiver`): its batches go out as whole runs, which a
broker restart or a kill cuts.

Three seeds in four run one member with ``--processes 2`` (:func:`supervised`): a
supervisor and two pipeline processes, each a member of the group; ``child`` SIGKILLs one
of those alone, and ``kill``, ``stop`` and ``cont`` signal a member's process group.

The workload, from plain confluent-kafka producers: the main topic's events (64 keys, no
``event-id`` header but for a share that has one, a few of those sent twice as an
application retrying would), ``left``/``right`` halves of one ``all_of`` set per context on
partitions 0 and 1, interleaved with them (two rules: ``join`` without a window, ``near``
with a window of event time), and 1% poison records (:data:`HOSTILE`), which must reach
the dead-letter topic and the store's dead records, and never an action. Meanwhile HTTP
clients send events through the gateway, each until it is answered 200
(:mod:`tests.chaos.nemesis_http`): one event and one action for each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg.conninfo import conninfo_to_dict

from checkpoint import ActionState, open_store
from devkit.broker import DevBroker, resolve_jars
from devkit.postgres import DevPostgres, scratch_database
from devkit.server import free_port
from kec.action import action_id
from tests.chaos import nemesis_http
from tests.chaos.fleet import Fleet, unreached_at_start
from tests.chaos.nemesis_http import Gateway, Senders
from tests.chaos.receiver import Receiver, TopicReceiver
from tests.nemesis.pg import PgProxy
from tests.support import run_in_repo, wait_for

SESSION_TIMEOUT_MS = 6000
TERM_TIMEOUT = 60.0  # seconds a member has to stop cleanly after SIGTERM
REPLAY_TIMEOUT = 240.0  # seconds the operator keeps trying a replay while faults go on
MEMBERS = ("m0", "m1", "m2")
MAIN_PARTITIONS = 6
KEYS = 64
RECREATED_PARTITIONS = 2
BEFORE_RECREATE = 40  # records per partition of the second topic before it is recreated
AFTER_RECREATE = 10  # and after: fewer, so its offsets go backwards
EXPLICIT_SHARE = 0.1  # main events with an event-id header
RESENT_SHARE = 0.05  # of those, sent twice


# -- the services of the run's own, which it crashes -------------------------------------


class Services:
    """A Kafka broker (the local JVM) and a PostgreSQL server of the test's own, which it
    SIGKILLs and starts again on the same ports and data. Start and restart them from a
    thread that lives as long as they do (the main thread): both die with their starter."""

    def __init__(self, root: Path) -> None:
        self.broker = DevBroker(resolve_jars(), workdir=root / "kafka", start_timeout=180)
        self.postgres = DevPostgres(start_timeout=120)

    def up(self) -> None:
        """Both running (started again if a run left one down)."""
        self.broker.start()
        self.postgres.start()

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def pg_dsn(self) -> str:
        return self.postgres.dsn

    @property
    def pg_address(self) -> tuple[str, int]:
        info = conninfo_to_dict(self.postgres.dsn)
        return str(info["host"]), int(info["port"] or 5432)

    def close(self) -> None:
        self.broker.close()
        self.postgres.close()


# -- the schedule --------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    at: float  # seconds after the stream starts; the step waits until then
    kind: str
    member: str = ""
    arg: float = 0.0  # downtime (broker) or probability (acks_on)
    seed: int = 0  # acks_on: the seed of the proxy's draws


def _disjoint(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Windows (start, end) in start order, dropping each that overlaps one kept."""
    kept: list[tuple[float, float]] = []
    for start, end in sorted(windows):
        if not kept or start > kept[-1][1] + 1.0:
            kept.append((start, end))
    return kept


def supervised(seed: int) -> str | None:
    """The member of ``seed`` that runs ``pipeline.processes: 2`` (a supervisor and two
    pipeline processes, each a member of the group), or None (three out of four seeds
    have one). Drawn apart from :func:`plan`, whose schedules stay each seed's own."""
    return random.Random(seed * 104_729 + 3).choice([None, *MEMBERS])


def plan(seed: int, duration: float) -> list[Step]:
    """The fault schedule of ``seed`` over a stream of ``duration`` seconds: every kind of
    fault at least once, at random seconds, on random members. At most one member is a
    zombie at a time, PostgreSQL outages and COMMIT-swallowing windows do not overlap
    their own kind, and the recreated topic is not due while PostgreSQL is down (its
    members must record the stop). A member is stopped with SIGTERM and started again once
    or twice (``term``; skipped while it is paused). The standalone gateway is SIGKILLed and started
    again once or twice (``gateway``). With a :func:`supervised` member, one or two of its
    pipeline processes are SIGKILLed alone too (``child``), for its supervisor to start
    again; ``kill``, ``stop`` and ``cont`` signal a member's whole process group. An
    operator replays every topic once after the recreation (``replay``)."""
    rng = random.Random(seed)

    def when(lo: float = 0.05, hi: float = 0.9) -> float:
        return round(rng.uniform(lo * duration, hi * duration), 1)

    steps = [Step(when(), "kill", rng.choice(MEMBERS)) for _ in range(rng.randint(2, 4))]
    pause = SESSION_TIMEOUT_MS / 1000
    zombies = [(when(0.05, 0.75), pause + rng.uniform(2, 5)) for _ in range(rng.randint(1, 2))]
    for start, end in _disjoint([(t, t + d) for t, d in zombies]):
        member = rng.choice(MEMBERS)
        steps += [Step(start, "stop", member), Step(round(end, 1), "cont", member)]
    steps.append(Step(when(), "broker", arg=round(rng.uniform(1, 5), 1)))
    outages = _disjoint(
        [(t, t + rng.uniform(1, 4)) for t in (when() for _ in range(rng.randint(1, 2)))]
    )
    for start, end in outages:
        steps += [Step(start, "pg_kill"), Step(round(end, 1), "pg_start")]
    windows = _disjoint([(t, t + rng.uniform(5, 15)) for t in (when(0.0, 0.8) for _ in range(2))])
    for start, end in windows:
        p, draws = round(rng.uniform(0.05, 0.3), 2), rng.randrange(1 << 32)
        steps += [Step(start, "acks_on", arg=p, seed=draws), Step(round(end, 1), "acks_off")]
    recreate = when(0.2, 0.5)
    for start, end in outages:
        if start <= recreate <= end:
            recreate = round(end + 0.5, 1)
    steps.append(Step(recreate, "recreate"))
    two = supervised(seed)
    if two is not None:
        more = random.Random(seed * 104_729 + 4)
        for _ in range(more.randint(1, 2)):
            at = round(more.uniform(0.05 * duration, 0.9 * duration), 1)
            steps.append(Step(at, "child", two, seed=more.randrange(2)))
    rolling = random.Random(seed * 104_729 + 6)
    for _ in range(rolling.randint(1, 2)):
        at = round(rolling.uniform(0.05 * duration, 0.9 * duration), 1)
        steps.append(Step(at, "term", rolling.choice(MEMBERS)))
    http = random.Random(seed * 104_729 + 5)
    for _ in range(http.randint(1, 2)):
        at = round(http.uniform(0.05 * duration, 0.9 * duration), 1)
        steps.append(Step(at, "gateway", arg=round(http.uniform(0.5, 3), 1)))
    # After the recreation (its step resets the partitions before the next step runs).
    at = round(random.Random(seed * 104_729 + 7).uniform(0.55 * duration, 0.9 * duration), 1)
    steps.append(Step(max(at, recreate + 1), "replay"))
    # Stable sort: a step planned for the same second as another keeps its kind's order.
    return sorted(steps, key=lambda s: s.at)


def describe(steps: list[Step]) -> str:
    parts = []
    for s in steps:
        what = s.kind + (f" {s.member}" if s.member else "")
        if s.kind in ("broker", "gateway"):
            what += f" (down {s.arg}s)"
        elif s.kind == "acks_on":
            what += f" p={s.arg}"
        parts.append(f"{s.at:g}s {what}")
    return ", ".join(parts)


# -- the workload --------------------------------------------------------------------------


@dataclass
class Record:
    """One record to produce, and where Kafka put it."""

    topic: str
    key: str | bytes | None
    value: str | bytes | None
    partition: int | None = None  # None: the key's
    context: str | None = None
    event_id: str | None = None  # the event-id header
    resend: bool = False  # the same event-id as an earlier record: a duplicate
    placed: tuple[int, int] | None = None  # (partition, offset) once acknowledged
    stamp: int = 0  # its Kafka timestamp (ms), the event's create time
    hostile: str = ""  # what makes it poison (:data:`HOSTILE`): no event, a dead letter
    extra: tuple[tuple[str, bytes], ...] = ()  # more headers

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        headers: list[tuple[str, str | bytes | None]] = []
        if self.event_id is not None:
            headers.append(("event-id", self.event_id.encode()))
        if self.context is not None:
            headers.append(("context", self.context.encode()))
        headers.extend(self.extra)
        return headers

    @property
    def coordinates(self) -> tuple[str, int, int]:
        assert self.placed is not None, f"{self} was never acknowledged"
        return (self.topic, *self.placed)

    def event_id_in(self, generation: int = 0) -> str:
        """The id the connector gives the event (a reset partition's generation)."""
        if self.event_id is not None:
            return self.event_id
        assert self.placed is not None, f"{self} was never acknowledged"
        eid = f"{self.topic}/{self.placed[0]}/{self.placed[1]}"
        return f"{eid}@{generation}" if generation else eid


def workload(seed: int, topic: str, events: int, contexts: int) -> list[Record]:
    """The main stream in production order: ``events`` events of 64 keys (a share with
    explicit ids, a few of those sent again later) and the two halves of ``contexts``
    all_of sets, ``left`` to partition 0 and ``right`` to partition 1, at random places."""
    rng = random.Random(seed * 7919 + 1)
    stream: list[Record] = []
    resent: dict[int, Record] = {}
    for i in range(events):
        key = f"k{i % KEYS}"
        explicit = rng.random() < EXPLICIT_SHARE
        record = Record(topic, key, str(i), event_id=f"ev-{seed}-{i}" if explicit else None)
        stream.append(record)
        if explicit and rng.random() < RESENT_SHARE:
            resent.setdefault(i + rng.randint(1, 500), record)
    out: list[Record] = []
    for i, record in enumerate(stream):
        out.append(record)
        again = resent.get(i)
        if again is not None:
            out.append(Record(topic, again.key, again.value, event_id=again.event_id, resend=True))
    for c in range(contexts):
        for partition, key in enumerate(("left", "right")):
            at = rng.randrange(len(out) + 1)
            half = Record(topic, key, f"ctx-{c}", partition=partition, context=f"ctx-{c}")
            out.insert(at, half)
    # Poison, from a generator of its own: the records above are each seed's as before.
    hostile = random.Random(seed * 7919 + 2)
    for i in range(round(events * HOSTILE_SHARE)):
        out.insert(hostile.randrange(len(out) + 1), _hostile(hostile, topic, i, contexts))
    return out


HOSTILE_SHARE = 0.01  # main records that cannot become events
WINDOW_S = 10  # the ``near`` rule's window: halves at most this far apart in event time
MAX_EVENT_BYTES = 65_536  # the members' pipeline.max_event_bytes
JSON = ("content-type", b"application/json")
# What makes a record poison, by kind: (key, value, headers). Each is a reason the codec
# gives (kec/codec.py); a half of an all_of set among them must not complete its set.
HOSTILE: dict[str, Any] = {
    "no key": lambda i, topic: (None, f"h{i}", ()),
    "tombstone": lambda i, topic: (f"k{i % KEYS}", None, ()),
    "not UTF-8": lambda i, topic: (f"k{i % KEYS}", b"\xff\xfe\x00" + bytes([i % 256]), ()),
    "not JSON": lambda i, topic: (f"k{i % KEYS}", '{"n": ' + str(i), (JSON,)),
    "too deep": lambda i, topic: (f"k{i % KEYS}", "[" * 20_000 + "]" * 20_000, (JSON,)),
    "too large": lambda i, topic: (f"k{i % KEYS}", "x" * (MAX_EVENT_BYTES + 1 + i), ()),
    "key too long": lambda i, topic: ("k" * 1025, f"h{i}", ()),
    "NUL in key": lambda i, topic: (f"k{i % KEYS}\x00", f"h{i}", ()),
    "key not UTF-8": lambda i, topic: (b"k\xc3(" + bytes([i % 256]), f"h{i}", ()),
    "other namespace": lambda i, topic: (f"k{i % KEYS}", f"h{i}", (("namespace", b"ops"),)),
    "a record's id": lambda i, topic: (
        f"k{i % KEYS}",
        f"h{i}",
        (("event-id", f"{topic}/0/{i}".encode()),),
    ),
}


def _hostile(rng: random.Random, topic: str, i: int, contexts: int) -> Record:
    kind = rng.choice(sorted(HOSTILE))
    key, value, extra = HOSTILE[kind](i, topic)
    if kind == "not JSON" and rng.random() < 0.5:  # a set's half that is poison
        c = rng.randrange(contexts)
        partition, key = rng.choice([(0, "left"), (1, "right")])
        return Record(
            topic, key, value, partition=partition, context=f"ctx-{c}", hostile=kind, extra=extra
        )
    return Record(topic, key, value, hostile=kind, extra=tuple(extra))


class Producing:
    """Produces records with a plain idempotent producer and records where each landed."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": 600_000,  # outlives any broker restart of the run
                "reconnect.backoff.max.ms": 1000,
                # A broker down on purpose is no news: its lines go to logging, not stderr.
                "logger": logging.getLogger("nemesis.producer"),
            }
        )
        self.errors: list[str] = []

    def send(self, record: Record) -> None:
        def acked(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self.errors.append(f"{record.key!r}={str(record.value)[:40]}: {err}")
            else:
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                record.placed = (partition, offset)
                record.stamp = msg.timestamp()[1]

        kwargs: dict[str, Any] = {} if record.partition is None else {"partition": record.partition}
        self.producer.produce(
            record.topic,
            key=record.key,
            value=record.value,
            headers=record.headers(),
            on_delivery=acked,
            **kwargs,
        )

    def flush(self, timeout: float) -> None:
        left = self.producer.flush(timeout)
        assert left == 0, f"{left} records not acknowledged within {timeout}s"
        assert not self.errors, f"records not produced: {self.errors[:5]}"

    def stream(self, records: list[Record], seconds: float, stop: threading.Event) -> None:
        """``records`` paced evenly over ``seconds``, then flushed."""
        started = time.monotonic()
        for i, record in enumerate(records):
            self.send(record)
            if i % 100 == 99:
                self.producer.poll(0)
                ahead = (i + 1) * seconds / len(records) - (time.monotonic() - started)
                if ahead > 0 and stop.wait(ahead):  # pacing the stream, not a wait on a result
                    return
        self.flush(900)


# -- the run -------------------------------------------------------------------------------


def _config(
    path: Path, bootstrap: str, topics: list[str], dsn: str, url: str, actions: str | None,
    dead: str, http: tuple[int, str],
) -> Path:  # fmt: skip
    """The members' config; ``actions``: the topic of a ``kafka`` target (else a webhook
    to ``url``), named ``hook`` either way; ``dead``: the dead-letter topic; ``http``: the
    gateway's port and topic."""
    hook = (
        f'{{type: webhook, url: "{url}", concurrency: 16, timeout: 5}}'
        if actions is None
        else f'{{type: kafka, topic: "{actions}", bootstrap_servers: "{bootstrap}"}}'
    )
    path.write_text(
        f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  properties:
    session.timeout.ms: {SESSION_TIMEOUT_MS}
    heartbeat.interval.ms: 500
    reconnect.backoff.max.ms: 1000
group_id: nemesis-{uuid.uuid4().hex[:10]}
namespaces:
  shop: {{topics: {json.dumps(topics)}}}
topic_creation: {{partitions: {RECREATED_PARTITIONS}, replication_factor: 1}}
dead_letter_topic: "{dead}"
http: {{port: {http[0]}, topic: "{http[1]}", namespace: {nemesis_http.NAMESPACE}}}
checkpoint: {{backend: postgres, dsn: "{dsn}"}}
pipeline: {{batch_size: 500, linger_ms: 20, max_event_bytes: {MAX_EVENT_BYTES}}}
retry: {{max_attempts: 100, initial_backoff_seconds: 0.2, max_backoff_seconds: 1}}
targets:
  hook: {hook}
rules:
  - {{name: each, namespace: shop, key: "*", action: notify, target: hook}}
  - {{name: join, namespace: shop, all_of: {{keys: [left, right], policy: first}},
     action: START, workflow: wf, task: t, target: hook}}
  - {{name: {nemesis_http.RULE}, namespace: {nemesis_http.NAMESPACE}, key: "*", action: notify,
     target: hook}}
  - {{name: near, namespace: shop, all_of: {{keys: [left, right], policy: first,
     window: {WINDOW_S}}}, action: START, workflow: wf, task: n, target: hook}}
"""
    )
    return path


def _member_logs(logs: Path) -> dict[str, str]:
    return {
        p.stem: p.read_text(errors="replace") for p in sorted(logs.glob("m*.log")) if p.is_file()
    }


_NOTABLE = re.compile(
    r"ERROR|Traceback|STOPPED|Fenced|conflict|unavailable|is back|stopping|claim", re.IGNORECASE
)


def notable_lines(logs: Path, limit: int = 60) -> str:
    """The members' log lines worth reading after a failure (errors, stops, fencing,
    conflicts, outages), the last ``limit`` of each."""
    out = []
    for member, text in _member_logs(logs).items():
        lines = [line for line in text.splitlines() if _NOTABLE.search(line)]
        out.append(f"--- {member}.log ({len(lines)} notable lines, last {limit}):")
        out.extend(lines[-limit:])
    return "\n".join(out)


@dataclass
class Applied:
    """The faults a run actually applied."""

    kills: int = 0
    zombies: int = 0
    broker_restarts: int = 0
    pg_restarts: int = 0
    acks_windows: int = 0
    recreated: int = 0
    child_kills: int = 0  # pipeline processes of a supervised member SIGKILLed alone
    gateway_kills: int = 0
    terms: int = 0  # members stopped with SIGTERM and started again
    fatal_restarts: int = 0  # members started again after they stopped on a fatal error
    unreached_restarts: int = 0  # ... after run exited 1 at its start, no broker answering
    replayed: str = ""  # the replay's report line
    replay_failures: list[str] = field(default_factory=list)  # tries that could not reach
    log: list[str] = field(default_factory=list)


@dataclass
class Run:
    """Everything one seeded run needs; :meth:`go` runs it and returns its report."""

    seed: int
    services: Services
    receiver: Receiver | TopicReceiver
    tmp: Path
    events: int = 15_000
    contexts: int = 200
    seconds: float = 100.0  # how long the main stream flows; the faults fall within it
    applied: Applied = field(default_factory=Applied)
    halves_apart: bool = False  # whether partitions 0 and 1 had two owners when the stream began
    target: str = "webhook"  # or "kafka": the actions go to a topic, read back
    supervised: str | None = None  # the member with two pipeline processes (:func:`supervised`)
    http_events: int = 1_000  # sent through the standalone gateway
    http_topic: str = ""
    gateway: Gateway | None = None
    senders: Senders | None = None
    replaying: threading.Thread | None = None

    def go(self) -> dict[str, Any]:
        self.services.up()
        # The broker's restarts are the run's own: the admin client's lines go to logging.
        admin = AdminClient(
            {"bootstrap.servers": self.services.bootstrap, "logger": logging.getLogger("nemesis")}
        )
        main, second = f"main-{uuid.uuid4().hex[:8]}", f"second-{uuid.uuid4().hex[:8]}"
        topics = [NewTopic(main, MAIN_PARTITIONS, 1), NewTopic(second, RECREATED_PARTITIONS, 1)]
        actions = f"actions-{uuid.uuid4().hex[:8]}" if self.target == "kafka" else None
        dead = f"dead-{uuid.uuid4().hex[:8]}"
        http = (free_port(), f"http-{uuid.uuid4().hex[:8]}")
        self.http_topic = http[1]
        if actions is not None:  # one partition: its offsets are the order of arrival
            topics.append(NewTopic(actions, 1, 1))
        futures = admin.create_topics(topics)
        for future in futures.values():
            future.result(timeout=60)
        steps = plan(self.seed, self.seconds)
        self.supervised = supervised(self.seed)
        print(
            f"\nnemesis seed {self.seed}"
            + (f" ({self.supervised} with 2 processes)" if self.supervised else "")
            + f": {describe(steps)}"
        )
        with contextlib.ExitStack() as stack:
            if actions is not None:
                self.receiver = stack.enter_context(TopicReceiver(self.services.bootstrap, actions))
            url = stack.enter_context(scratch_database(self.services.pg_dsn))
            proxy = stack.enter_context(PgProxy(upstream=self.services.pg_address))
            config = _config(
                self.tmp / "connector.yaml", self.services.bootstrap, [main, second],
                proxy.dsn(url, sslmode="disable"), self.receiver.url, actions, dead, http,
            )  # fmt: skip
            # The operator's tools reach the store directly: their answers are not lost.
            operator = _config(
                self.tmp / "operator.yaml", self.services.bootstrap, [main, second], url,
                self.receiver.url, actions, dead, http,
            )  # fmt: skip
            fleet = Fleet(config, self.tmp)
            for member in MEMBERS:  # the standalone gateway below serves HTTP
                fleet.options[member] = ["--no-gateway"]
            if self.supervised is not None:
                fleet.options[self.supervised] += ["--processes", "2"]
            stack.callback(fleet.stop)
            for member in MEMBERS:
                fleet.start(member)
            self.gateway = gateway = Gateway(config, http[0], self.tmp / "gateway.log")
            stack.callback(gateway.stop)
            gateway.start()
            records = workload(self.seed, main, self.events, self.contexts)
            before = self._second_topic(second, BEFORE_RECREATE, "r")
            self._wait_started(fleet, url, main, before)
            gateway.up()
            stop = threading.Event()
            producing = Producing(self.services.bootstrap)
            stream = threading.Thread(
                target=self._stream, args=(producing, records, stop), daemon=True
            )
            stream.start()
            self.senders = senders = Senders(gateway, self.seed, self.http_events, self.seconds)
            senders.start(stop)
            after: list[Record] = []
            try:
                try:
                    self._apply(steps, fleet, proxy, admin, second, operator, url, after)
                finally:
                    print(f"nemesis seed {self.seed} applied: {', '.join(self.applied.log)}")
                stream.join(900)
                assert not stream.is_alive(), "the producer did not finish"
                if self.replaying is not None:
                    self.replaying.join(REPLAY_TIMEOUT + 60)
                    assert not self.replaying.is_alive(), "the replay did not finish"
                    replayed = self.applied.replayed
                    assert replayed, f"no replay got through: {self.applied.replay_failures}"
                    # Unchanged rules: every action a replayed record gives was queued live.
                    assert "actions queued 0 (" in replayed, replayed
                assert not producing.errors, f"records not produced: {producing.errors[:5]}"
                senders.join(900)
                assert not senders.failures, f"HTTP sends failed: {senders.failures[:5]}"
                expected = self._expected(url, records, before, after, second)
                self._drain(fleet, url, expected)
            except BaseException:
                stop.set()
                print(notable_lines(self.tmp))
                raise
            fleet.stop()
            gateway.stop()
            try:
                report = self._check(url, records, before, after, second, expected)
                report.update(self._check_dead(url, records, dead))
            except AssertionError:
                print(notable_lines(self.tmp))
                raise
            report["swallowed COMMIT answers"] = proxy.swallowed
            report["COMMIT answers"] = proxy.stats()["commit_acks"]
        return report

    # -- phases ------------------------------------------------------------------------

    def _second_topic(self, topic: str, per_partition: int, prefix: str) -> list[Record]:
        producing = Producing(self.services.bootstrap)
        records = [
            Record(topic, f"{prefix}{p}-{i % 2}", f"{prefix}{i}", partition=p)
            for i in range(per_partition)
            for p in range(RECREATED_PARTITIONS)
        ]
        for record in records:
            producing.send(record)
        producing.flush(120)
        return records

    def _wait_started(self, fleet: Fleet, url: str, main: str, before: list[Record]) -> None:
        """Every member owns partitions, and the second topic's first records are
        checkpointed and delivered (so its recreation cannot lose them)."""
        wanted = {action_id("each", (r.event_id_in(),)) for r in before}
        with open_store(url) as store:
            consumers = len(MEMBERS) + (1 if self.supervised else 0)

            def ready() -> bool:
                self._supervise(fleet)
                owners = {p.owner for p in store.partitions()}
                return len(owners) == consumers and wanted <= self.receiver.keys()

            wait_for(ready, timeout=180, interval=0.5, what=f"{consumers} consumers at work")
            owner = {p.tp: p.owner for p in store.partitions()}
        self.halves_apart = owner.get((main, 0)) != owner.get((main, 1))

    def _supervise(self, fleet: Fleet) -> None:
        """What a supervisor does: a member that stopped on a fatal Kafka error (its
        consumer fenced for good, say) is started again, as the connector expects, and so
        is one that exited 1 at its start because no broker answered (restarted while the
        broker was down: run says so and exits rather than wait, so that a wrong address
        is said at once; compose's restart policy starts it again); any other exit fails
        the run, as does the gateway's."""
        if self.gateway is not None:
            self.gateway.check()
        for member, proc in list(fleet.procs.items()):
            if proc.poll() is None:
                continue
            text = (self.tmp / f"{member}.log").read_text(errors="replace")
            if unreached_at_start(proc.returncode, text):
                self.applied.unreached_restarts += 1
                ending = text.rstrip().rpartition("\n")[2]
                self.applied.log.append(f"restart {member} after: {ending}")
                fleet.start(member)
                continue
            last = [line for line in text.splitlines() if "stopping: " in line][-1:]
            if not (last and "stopping: fatal" in last[0]):
                raise AssertionError(f"{member} exited {proc.returncode}:\n{text[-3000:]}")
            self.applied.fatal_restarts += 1
            self.applied.log.append(f"restart {member} after: {last[0].split('stopping: ')[1]}")
            fleet.start(member)

    def _stream(self, producing: Producing, records: list[Record], stop: threading.Event) -> None:
        try:
            producing.stream(records, self.seconds, stop)
        except Exception as exc:  # reported by the main thread
            producing.errors.append(f"producer failed: {exc!r}")

    def _apply(
        self,
        steps: list[Step],
        fleet: Fleet,
        proxy: PgProxy,
        admin: AdminClient,
        second: str,
        operator: Path,
        url: str,
        after: list[Record],
    ) -> None:
        started = time.monotonic()
        pace = threading.Event()  # never set: its wait paces the schedule
        stopped: set[str] = set()
        for step in steps:
            pace.wait(max(0.0, started + step.at - time.monotonic()))
            self._supervise(fleet)
            a, now = self.applied, time.monotonic() - started
            if step.kind == "kill":
                fleet.signal(step.member, signal.SIGKILL, group=True)
                fleet.start(step.member)
                stopped.discard(step.member)
                a.kills += 1
            elif step.kind == "stop":
                fleet.signal(step.member, signal.SIGSTOP, group=True)
                stopped.add(step.member)
                a.zombies += 1
            elif step.kind == "cont":
                fleet.signal(step.member, signal.SIGCONT, group=True)
                stopped.discard(step.member)
            elif step.kind == "term":
                if step.member in stopped:
                    a.log.append(f"{now:.0f}s term {step.member}: paused, skipped")
                    continue
                self._terminate(fleet, step.member)
                fleet.start(step.member)
                a.terms += 1
            elif step.kind == "child":
                if not self._kill_child(fleet, step, stopped):
                    a.log.append(f"{now:.0f}s child {step.member}: none running, skipped")
                    continue
                a.child_kills += 1
            elif step.kind == "broker":
                self.services.broker.kill()
                pace.wait(step.arg)
                self.services.broker.start()
                a.broker_restarts += 1
            elif step.kind == "gateway":
                assert self.gateway is not None
                self.gateway.kill()
                pace.wait(step.arg)
                self.gateway.start()
                a.gateway_kills += 1
            elif step.kind == "pg_kill":
                self.services.postgres.kill()
            elif step.kind == "pg_start":
                self.services.postgres.start()
                a.pg_restarts += 1
            elif step.kind == "acks_on":
                proxy.swallow_commit_acks(probability=step.arg, seed=step.seed)
                a.acks_windows += 1
            elif step.kind == "acks_off":
                proxy.swallow_commit_acks(0)
            elif step.kind == "recreate":
                after.extend(self._recreate(admin, second, operator, url))
                a.recreated += 1
            elif step.kind == "replay":  # beside the schedule: it must not delay the faults
                self.replaying = threading.Thread(
                    target=self._replay, args=(operator,), name="replay", daemon=True
                )
                self.replaying.start()
            a.log.append(f"{now:.0f}s {step.kind} {step.member}".rstrip())
        assert not stopped, f"members left stopped: {stopped}"

    def _replay(self, operator: Path) -> None:
        """``event-connector replay`` of every topic from offset 0, tried again while Kafka
        or the store cannot be reached (exit 1: the faults go on meanwhile), for at most
        :data:`REPLAY_TIMEOUT` seconds."""
        a, deadline = self.applied, time.monotonic() + REPLAY_TIMEOUT
        pace = threading.Event()
        while time.monotonic() < deadline:
            done = run_in_repo(
                "-m", "connector", "replay", "-c", str(operator), "--from-offset", "0",
                "--no-progress", timeout=REPLAY_TIMEOUT,
            )  # fmt: skip
            if done.returncode == 0:
                a.replayed = done.stdout.strip()
                return
            a.replay_failures.append(done.stderr.strip().rpartition("\n")[2])
            pace.wait(2)

    def _terminate(self, fleet: Fleet, member: str) -> None:
        """SIGTERM ``member`` (its main process, as a container runtime does) and wait for
        it to exit 0: it checkpoints and commits its batch, settles its deliveries and
        leaves the group, whatever else is failing at the time."""
        proc = fleet.procs[member]
        # Just started again (by a step a moment before), it may not handle SIGTERM yet;
        # a deploy waits for a started instance too.
        wait_for(
            lambda: proc.poll() is not None or fleet.catches(member, signal.SIGTERM),
            timeout=60, interval=0.1, what=f"{member} handling SIGTERM",
        )  # fmt: skip
        if proc.poll() is not None:
            return  # exited meanwhile: _supervise has said why
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(TERM_TIMEOUT)
        except subprocess.TimeoutExpired:
            fleet.signal(member, signal.SIGKILL, group=True)
            raise AssertionError(
                f"{member} did not stop within {TERM_TIMEOUT}s of SIGTERM:\n"
                + (self.tmp / f"{member}.log").read_text(errors="replace")[-3000:]
            ) from None
        assert code == 0, (
            f"{member} exited {code} on SIGTERM:\n"
            + (self.tmp / f"{member}.log").read_text(errors="replace")[-3000:]
        )

    def _kill_child(self, fleet: Fleet, step: Step, stopped: set[str]) -> bool:
        """SIGKILL one pipeline process of ``step.member`` (``step.seed`` picks which of
        two), waiting a little for them to be there after a restart; False if none came
        (or the member is paused: its supervisor could not restart it yet)."""
        if step.member in stopped:
            return False
        children: list[int] = []

        def spawned() -> bool:
            nonlocal children
            children = fleet.children(step.member)
            return len(children) == 2

        with contextlib.suppress(AssertionError):
            wait_for(spawned, timeout=15, interval=0.2, what="two pipeline processes")
        if not children:
            return False
        with contextlib.suppress(ProcessLookupError):  # it died meanwhile: as good
            os.kill(children[step.seed % len(children)], signal.SIGKILL)
        return True

    def _recreate(self, admin: AdminClient, topic: str, operator: Path, url: str) -> list[Record]:
        """Delete the second topic and create it again with fewer records; wait until the
        members stop its partitions; reset them as an operator would."""
        old = _topic_id(admin, topic)
        admin.delete_topics([topic])[topic].result(timeout=60)

        def created() -> bool:
            try:
                admin.create_topics([NewTopic(topic, RECREATED_PARTITIONS, 1)])[topic].result(
                    timeout=30
                )
            except KafkaException as exc:
                # A member starting meanwhile may have created it (topic_creation has the
                # same partition count): a new id is as good.
                if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    return _topic_id(admin, topic) not in (None, old)
                return False
            return True

        wait_for(created, timeout=90, interval=0.5, what=f"{topic} created again")
        records = self._second_topic(topic, AFTER_RECREATE, "s")

        def all_stopped() -> bool:
            with open_store(url) as store:
                rows = [p for p in store.partitions() if p.tp[0] == topic]
            return len(rows) == RECREATED_PARTITIONS and all(p.stopped for p in rows)

        wait_for(all_stopped, timeout=180, interval=1.0, what=f"both partitions of {topic} stopped")
        assert any(
            f"{topic}[" in line and "STOPPED" in line
            for text in _member_logs(self.tmp).values()
            for line in text.splitlines()
        ), "no member logged the stop"
        listed = run_in_repo(
            "-m", "connector", "partitions", "list", "-c", str(operator), "--json", timeout=120
        )
        assert listed.returncode == 0, listed.stderr
        rows = [r for r in json.loads(listed.stdout) if r["topic"] == topic]
        assert len(rows) == RECREATED_PARTITIONS and all(r["stopped"] for r in rows), rows
        reset = run_in_repo(
            "-m", "connector", "partitions", "reset", "-c", str(operator), "--topic", topic,
            timeout=120,
        )  # fmt: skip
        assert reset.returncode == 0, reset.stderr
        return records

    def _expected(
        self, url: str, records: list[Record], before: list[Record], after: list[Record],
        second: str,
    ) -> dict[str, Record]:  # fmt: skip
        """Action id -> the record whose event fired it (``each``), or the context's
        ``left`` half (``join``)."""
        with open_store(url) as store:
            generations = {p.tp: p.generation for p in store.partitions() if p.tp[0] == second}
        assert set(generations.values()) == {1}, f"one reset per partition: {generations}"
        expected: dict[str, Record] = {}
        for r in [*records, *before]:
            if not r.resend and not r.hostile:
                expected[action_id("each", (r.event_id_in(),))] = r
        for r in after:
            expected[action_id("each", (r.event_id_in(1),))] = r
        for pair in _halves(records).values():
            ids = (pair["left"].event_id_in(), pair["right"].event_id_in())
            expected[action_id("join", ids)] = pair["left"]
            if _near(pair):
                expected[action_id("near", ids)] = pair["left"]
        assert self.senders is not None
        for sent in self.senders.sent:  # its id is its Idempotency-Key
            expected[action_id(nemesis_http.RULE, (sent.key,))] = Record(
                self.http_topic, sent.event_key, "", event_id=sent.key, placed=sent.answered
            )
        return expected

    def _drain(self, fleet: Fleet, url: str, expected: dict[str, Record]) -> None:
        """Every action delivered, nothing pending, no partition stopped (bounded)."""
        wanted = set(expected)

        def delivered() -> bool:
            self._supervise(fleet)
            return wanted <= self.receiver.keys()

        try:
            wait_for(delivered, timeout=300, interval=1.0, what="every action delivered")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self._missing(url, expected)}") from None
        with open_store(url) as store:

            def settled() -> bool:
                self._supervise(fleet)
                return store.count_actions(ActionState.PENDING) == 0 and not any(
                    p.stopped for p in store.partitions()
                )

            wait_for(settled, timeout=120, interval=0.5, what="nothing pending or stopped")

    def _missing(self, url: str, expected: dict[str, Record]) -> str:
        """What is missing where: undelivered actions by partition, beside the store's and
        Kafka's offsets."""
        keys = self.receiver.keys()
        where: Counter[tuple[str, int]] = Counter()
        first: dict[tuple[str, int], int] = {}
        for aid, r in expected.items():
            if aid not in keys:
                assert r.placed is not None
                tp = (r.topic, r.placed[0])
                where[tp] += 1
                first[tp] = min(first.get(tp, r.placed[1]), r.placed[1])
        lines = [f"{len(set(expected) - keys)} actions undelivered:"]
        with open_store(url) as store:
            rows = {p.tp: p for p in store.partitions()}
            checkpointed = store.count_events()
        for tp, n in sorted(where.items()):
            row = rows.get(tp)
            lines.append(
                f"  {tp[0]}[{tp[1]}]: {n} undelivered from offset {first[tp]}; store: "
                + (
                    f"owner {row.owner} epoch {row.epoch} next offset {row.next_offset} "
                    f"next action {row.next_aseq} watermark {row.watermark} "
                    f"stopped {row.stopped!r}"
                    if row
                    else "no row"
                )
            )
        lines.append(f"  {checkpointed} events checkpointed")
        return "\n".join(lines)

    def _check(
        self, url: str, records: list[Record], before: list[Record], after: list[Record],
        second: str, expected: dict[str, Record],
    ) -> dict[str, Any]:  # fmt: skip
        """Every invariant, once the members have stopped."""
        with open_store(url) as store:
            count = store.count_events()
            stored = [e.event_id for e in store.iter_events()]
            by_rule = store.count_actions_by_rule()
            pending = store.count_actions(ActionState.PENDING)
            dead = store.count_actions(ActionState.DEAD)
            stopped = [p.tp for p in store.partitions() if p.stopped]
        events = [r for r in [*records, *before] if not r.resend and not r.hostile]
        assert self.senders is not None
        sent = self.senders.sent
        wanted_ids = [
            *(r.event_id_in() for r in events),
            *(r.event_id_in(1) for r in after),
            *(s.key for s in sent),
        ]
        # Nothing lost, nothing doubled: each event checkpointed once, under its id.
        assert len(stored) == len(set(stored)), (
            f"{len(stored) - len(set(stored))} events checkpointed twice: "
            f"{[e for e, n in Counter(stored).items() if n > 1][:10]}"
        )
        missing, foreign = set(wanted_ids) - set(stored), set(stored) - set(wanted_ids)
        assert not missing and not foreign, (
            f"{len(missing)} events missing ({sorted(missing)[:10]}), "
            f"{len(foreign)} unexpected ({sorted(foreign)[:10]})"
        )
        assert count == len(wanted_ids)
        # One action per event, one per context's set, and no other.
        near = {c for c, pair in _halves(records).items() if _near(pair)}
        assert by_rule == {
            "each": len(wanted_ids) - len(sent),
            "join": self.contexts,
            "near": len(near),
            nemesis_http.RULE: len(sent),
        }, f"{by_rule}; near: {len(near)} of {self.contexts} sets within {WINDOW_S}s"
        keys = self.receiver.keys()
        assert keys == set(expected), (
            f"{len(set(expected) - keys)} actions never delivered, "
            f"{len(keys - set(expected))} delivered that no event explains: "
            f"{[self.receiver.bodies.get(k) for k in sorted(keys - set(expected))[:5]]}"
        )
        joins = Counter(b["context"] for b in self.receiver.bodies.values() if b["rule"] == "join")
        assert joins == Counter({f"ctx-{c}": 1 for c in range(self.contexts)}), (
            f"contexts fired other than once: {[c for c, n in joins.items() if n != 1][:10]}"
        )
        # The windowed set: fired once for each context whose halves are close enough in
        # event time, whatever order the partitions were read in, and for no other.
        fired = Counter(b["context"] for b in self.receiver.bodies.values() if b["rule"] == "near")
        assert fired == Counter(dict.fromkeys(near, 1)), (
            f"windowed sets: {sorted(near - set(fired))[:10]} not fired, "
            f"{sorted(set(fired) - near)[:10]} fired out of their window, "
            f"{[c for c, n in fired.items() if n > 1][:10]} fired twice"
        )
        # The first delivery of one key's actions follows its events' order in the log.
        streams: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
        for aid, r in expected.items():
            if self.receiver.bodies[aid]["rule"] == "each":
                assert r.placed is not None
                streams[(r.topic, str(r.key))].append((r.placed[1], self.receiver.first[aid]))
        late = [
            (stream, a, b)
            for stream, ranks in streams.items()
            for a, b in pairwise(sorted(ranks))
            if b[1] < a[1]
        ]
        assert not late, f"{len(late)} first deliveries ahead of an older event's: {late[:5]}"
        # Nothing stalled.
        assert pending == 0 and dead == 0, f"{pending} pending, {dead} dead actions"
        assert not stopped, f"partitions left stopped: {stopped}"
        repeated = self.receiver.repeated()
        a = self.applied
        return {
            "seed": self.seed,
            "target": self.target,
            "events": len(wanted_ids),
            "actions": len(expected),
            "requests": self.receiver.requests,
            "refused (503)": self.receiver.refused,
            "repeated deliveries": repeated,
            "repeated %": round(100 * repeated / len(expected), 2),
            "delivered by two processes": (
                self.receiver.by_two_processes() if self.target == "webhook" else "not known"
            ),
            "supervised": self.supervised or "none",
            "kills": a.kills,
            "child kills": a.child_kills,
            "SIGTERMs": a.terms,
            "zombies": a.zombies,
            "broker restarts": a.broker_restarts,
            "PostgreSQL restarts": a.pg_restarts,
            "COMMIT-swallowing windows": a.acks_windows,
            "topic recreations": a.recreated,
            "restarts after a fatal exit": a.fatal_restarts,
            "restarts after Kafka out of reach at start": a.unreached_restarts,
            "all_of halves on two owners at start": self.halves_apart,
            "HTTP events": len(sent),
            "HTTP resends after a 200": self.senders.resent,
            "HTTP answers": dict(sorted(self.senders.answers.items())),
            "gateway kills": a.gateway_kills,
            "replay": a.replayed.partition("\n")[0].partition(": ")[2] or "none",
            "replay tries refused": len(a.replay_failures),
            "gateway restarts after Kafka out of reach at start": (
                self.gateway.unreached_restarts if self.gateway else 0
            ),
            f"sets within {WINDOW_S}s": len(near),
        }

    def _check_dead(self, url: str, records: list[Record], dead: str) -> dict[str, Any]:
        """Every poison record recorded in the store once and none other, and on the
        dead-letter topic as it came (at least once: a copy sent before a crash that undid
        its batch is sent again), naming its source."""
        hostile = {r.coordinates: r for r in records if r.hostile}
        with open_store(url) as store:
            rows = store.list_dead_records(limit=10 * len(hostile) + 100)
        stored = Counter((r.topic, r.partition, r.offset) for r in rows)
        assert set(stored) == set(hostile) and max(stored.values(), default=1) == 1, (
            f"dead records: {len(set(hostile) - set(stored))} poison records not recorded "
            f"({[hostile[c].hostile for c in set(hostile) - set(stored)][:10]}), "
            f"{len(set(stored) - set(hostile))} recorded that are not poison, "
            f"{sum(n > 1 for n in stored.values())} recorded twice"
        )
        copies = read_topic(self.services.bootstrap, dead)
        sources: Counter[tuple[str, int, int]] = Counter()
        for key, value, headers in copies:
            source = (
                headers["source-topic"].decode(),
                int(headers["source-partition"]),
                int(headers["source-offset"]),
            )
            sources[source] += 1
            record = hostile.get(source)
            assert record is not None, f"a dead letter for {source}, which is not poison"
            assert (key, value) == (_raw(record.key), _raw(record.value)), (
                f"the dead letter of {source} ({record.hostile}) is not the record as it came"
            )
            assert headers.get("error"), f"the dead letter of {source} gives no reason"
        missing = set(hostile) - set(sources)
        assert not missing, (
            f"{len(missing)} poison records never reached {dead}: "
            f"{sorted((c, hostile[c].hostile) for c in missing)[:10]}"
        )
        return {
            "poison records": len(hostile),
            "dead letters": len(copies),
            "dead letters repeated": len(copies) - len(sources),
        }


def _halves(records: list[Record]) -> dict[str, dict[str, Record]]:
    """Each context's ``all_of`` halves, by key (``left``, ``right``); poison is none."""
    halves: dict[str, dict[str, Record]] = defaultdict(dict)
    for r in records:
        if r.context is not None and not r.hostile:
            halves[r.context][str(r.key)] = r
    return halves


def _near(pair: dict[str, Record]) -> bool:
    """Whether a context's halves are within the ``near`` rule's window of each other."""
    return abs(pair["left"].stamp - pair["right"].stamp) <= WINDOW_S * 1000


def _raw(text: str | bytes | None) -> bytes | None:
    return text.encode() if isinstance(text, str) else text


def read_topic(
    bootstrap: str, topic: str, timeout: float = 120.0
) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    """Every record of ``topic`` up to its high watermarks: (key, value, headers)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"nemesis-dead-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
        reached: dict[int, int] = dict.fromkeys(partitions, 0)

        def read_all() -> bool:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                headers = {k: _raw(v) or b"" for k, v in msg.headers() or []}
                out.append((msg.key(), msg.value(), headers))
                partition, offset = msg.partition(), msg.offset()
                assert partition is not None and offset is not None
                reached[partition] = offset + 1
            return all(reached[p] >= end for p, end in ends.items())

        wait_for(read_all, timeout=timeout, interval=0.0, what=f"{topic} read to its end")
        return out
    finally:
        consumer.close()


def _topic_id(admin: AdminClient, topic: str) -> str | None:
    from connector.topics import describe_topics

    found = describe_topics(admin, [topic], 30)
    info = found.get(topic)
    return info.topic_id if info is not None else None


@contextlib.contextmanager
def own_services(root: Path) -> Iterator[Services]:
    services = Services(root)
    try:
        services.up()
        yield services
    finally:
        services.close()


def report_line(report: dict[str, Any], seconds: float) -> str:
    return f"nemesis {report['seed']} in {seconds:.0f}s: " + ", ".join(
        f"{k} {v}" for k, v in report.items() if k != "seed"
    )
