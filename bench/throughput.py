"""Throughput and latency of the connector against a raw confluent-kafka consumer.

``make bench`` (or ``python -m bench.throughput --help``). In ONE run, on one broker and
one topic of N small keyed events:

(a) raw: a confluent-kafka consumer, manual synchronous commit per batch — the ceiling;
(b) the connector end to end, exactly-once, SQLite store, ``log`` target to a file;
(b0) the same with ``checkpoint.lineage: false``: what lineage costs (``trace``);
(c) the same with PostgreSQL;
(d) per-event mode (batch of 1), on fewer events: bounded by the disk's fsync rate;
(d2) durable ``wait_for_event`` steps, 64 awaited at once, as many as (d) (bench/steps.py):
    steps recorded meanwhile share a transaction (group commit);
(e) the connector, SQLite, one action per event to a Kafka topic (``kafka`` target), and
(f) the peer on the same records: quixstreams, exactly-once, one action per event to a
    Kafka topic (in its own venv, see bench/peer/; skipped when that venv is missing);
(g) the ``webhook`` target against a receiver (another process) that answers after 10 ms;
(h) the floor: a minimal Python loop doing (e)'s durable work on the same records
    (bench/floor.py: parse, rule by key, blake2b action id, one SQLite WAL
    ``synchronous=FULL`` transaction per batch, idempotent producer, async offset commit),
    in this process; every row's "vs (h)" is its ratio to it;
(i) ``event-connector run -c FILE`` as a user starts it (SQLite, a YAML rule, one action
    per event to a Kafka topic by a ``kafka`` target, as (e)) with ``pipeline.processes`` 1
    and 2 (``--processes``), each on a new topic of ``--events`` records produced while it
    was stopped once every process owned partitions (bench/fleet.py): what more cores
    give, beside (f);
(j0) a plain rule (a key glob, one action per event) over two topics of orders, and
(j) beside it, a correlation rule on the same records: ``all_of`` payment and shipment
    joined on the order id in their JSON values (``correlate``, a window), one action per
    order; SQLite, ``log`` target (``--correlation-only`` runs (a), (j0) and (j) alone);
the scale row: 1, 2 and 3 ``run -c`` instances on one PostgreSQL store, events/s and
CPU-seconds per 1,000 events each; the memory row: one instance's RSS after 100,000 and
after 1,000,000 events (bench/fleet.py);
then p50/p99 event→action latency of (b) at a fixed offered load (default 5,000 events/s),
beside what a raw consumer sees of the same load on the same machine (the latency floor).

Prints a table and writes JSON (``--json``). Figures are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench import fleet, steps
from bench.floor import run_floor
from checkpoint import open_store
from connector.common.heap import settle_for_service
from connector.pipeline import PipelineSettings
from connector.service import ConnectorService
from connector.targets import KafkaTarget, LogTarget, Target, WebhookTarget
from devkit.broker import KafkaCluster, provide_kafka
from devkit.postgres import provide_postgres, scratch_database
from kec.codec import record_headers, record_value
from kec.evaluation import Evaluator, NotifyAll
from kec.event import Event


@dataclass
class Row:
    name: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def create_topic(bootstrap: str, partitions: int) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result(timeout=30)
    return name


def _event(i: int, keys: int) -> Event:
    key = f"customer-{i % keys:05d}"
    # ~150 B of value, the size the benchmark is specified with
    value = json.dumps({"seq": i, "status": "created", "amount": i % 1000, "pad": "x" * 88})
    return Event(key=key, value=value, namespace="bench", sender="bench")


# Plain records, as any producer writes them: a key, a JSON value, its content type. No
# event-id header: events are known by their offset (set --event-ids to add one).
PLAIN_HEADERS: list[tuple[str, str | bytes | None]] = [("content-type", b"application/json")]


Record = tuple[str, bytes, list[tuple[str, str | bytes | None]]]


def build_records(count: int, keys: int, event_ids: bool = False) -> list[Record]:
    """The benchmark's records (key, value, headers), built before a clock starts where
    the connector reads them while they are produced (the scale row), or while it is
    stopped (rows (i))."""
    built: list[Record] = []
    for i in range(count):
        event = _event(i, keys)
        headers = list(record_headers(event)) if event_ids else PLAIN_HEADERS
        built.append((event.key, record_value(event), headers))
    return built


def produce(bootstrap: str, topic: str, count: int, keys: int, event_ids: bool = False) -> None:
    send_records(bootstrap, topic, build_records(count, keys, event_ids))


def send_records(bootstrap: str, topic: str, records: Sequence[Record]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )
    for i, (key, value, headers) in enumerate(records):
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("benchmark events were not acknowledged")


def run_raw(bootstrap: str, topic: str, count: int, batch: int) -> Row:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    seen = 0
    started: float | None = None
    try:
        while seen < count:
            messages = consumer.consume(batch, 1.0)
            if not messages:
                continue
            if started is None:
                started = time.perf_counter()
            offsets: dict[tuple[str, int], int] = {}
            for msg in messages:
                if msg.error() is None:
                    seen += 1
                    offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        assert started is not None
        return Row(
            "(a) raw confluent-kafka consumer, commit per batch",
            seen,
            time.perf_counter() - started,
        )
    finally:
        consumer.close()


@contextmanager
def running_connector(
    bootstrap: str,
    topic: str,
    store_url: str,
    target: Target,
    batch: int,
    linger_ms: int,
    lineage: bool = True,
    evaluator: Evaluator | None = None,
    topics: tuple[str, ...] = (),
) -> Iterator[ConnectorService]:
    settings = PipelineSettings(
        bootstrap_servers=bootstrap,
        group_id=f"conn-{uuid.uuid4().hex[:8]}",
        topics={t: "bench" for t in (topic, *topics)},
        batch_size=batch,
        linger_ms=linger_ms,
    )
    store = open_store(store_url, exclusive=True)  # as `run` opens it: the only writer
    store.lineage = lineage  # checkpoint.lineage
    rules = evaluator or NotifyAll(target.name)
    service = ConnectorService(settings, store, rules, {target.name: target})
    settle_for_service()  # as `run` does: the rows measure the connector's process
    stop = threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        try:
            service.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main, name="connector")
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(120)
        if errors:
            raise errors[0]


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark timed out waiting for {what}")
        time.sleep(0.02)  # coarse: the poll takes the interpreter lock from the connector


def run_connector(
    name: str,
    bootstrap: str,
    topic: str,
    count: int,
    store_url: str,
    workdir: Path,
    batch: int,
    linger_ms: int,
    target: Target | None = None,
    lineage: bool = True,
) -> Row:
    if target is None:
        target = LogTarget("log", workdir / f"actions-{uuid.uuid4().hex[:6]}.jsonl")
    with running_connector(
        bootstrap, topic, store_url, target, batch, linger_ms, lineage
    ) as service:
        return _timed(name, service, count, count)


def _timed(name: str, service: ConnectorService, count: int, actions: int) -> Row:
    """Events/s of ``service`` over ``count`` events: from its first batch until
    ``actions`` are delivered (the clock starts after the first batch, so only what came
    after it counts)."""
    _wait(
        lambda: service.pipeline is not None and service.pipeline.stats.records > 0,
        120,
        "the first batch",
    )
    started = time.perf_counter()
    first = service.pipeline.stats.records if service.pipeline else 0
    _wait(
        lambda: service.dispatcher.stats.delivered >= actions,
        1800,
        f"{actions} actions delivered",
    )
    return Row(name, count - first, time.perf_counter() - started)


def produce_orders(bootstrap: str, count: int, partitions: int, keys: int) -> tuple[str, str]:
    """``count`` events for (j0)/(j): order i's payment to one topic and its shipment to
    another, keys ``payment-K``/``shipment-K`` (spread over the partitions), the order id
    in the JSON value (~150 B, as the other rows' events)."""
    payments, shipments = create_topic(bootstrap, partitions), create_topic(bootstrap, partitions)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )
    for i in range(count):
        order, shipped = divmod(i, 2)
        kind, topic = ("shipment", shipments) if shipped else ("payment", payments)
        value = json.dumps({"order": order, "status": kind, "pad": "x" * 100})
        while True:
            try:
                producer.produce(
                    topic, key=f"{kind}-{order % keys:05d}", value=value, headers=PLAIN_HEADERS
                )
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("benchmark events were not acknowledged")
    return payments, shipments


def run_rules(
    name: str,
    bootstrap: str,
    topics: tuple[str, str],
    count: int,
    actions: int,
    rules: list[dict[str, object]],
    workdir: Path,
    batch: int,
    linger_ms: int,
) -> Row:
    """The connector with a rule set (not NotifyAll) over two topics, SQLite, ``log``
    target: events/s from the first batch until ``actions`` are delivered."""
    from connector.rules import Rule
    from connector.rules.trigger import TriggerEngine

    engine = TriggerEngine([Rule.model_validate(r) for r in rules])
    target = LogTarget("log", workdir / f"actions-{uuid.uuid4().hex[:6]}.jsonl")
    store_url = f"sqlite:///{workdir / f'rules-{uuid.uuid4().hex[:6]}.db'}"
    with running_connector(
        bootstrap, topics[0], store_url, target, batch, linger_ms,
        evaluator=engine, topics=topics[1:],
    ) as service:  # fmt: skip
        return _timed(name, service, count, actions)


PLAIN_RULE: dict[str, object] = {
    "name": "plain", "namespace": "bench", "key": "*", "action": "notify",
}  # fmt: skip
JOIN_RULE: dict[str, object] = {
    "name": "join", "namespace": "bench", "action": "notify",
    "all_of": {"keys": ["payment-*", "shipment-*"], "window": 600, "policy": "latest"},
    "correlate": {"json": "order"},
}  # fmt: skip


def correlation_rows(
    bootstrap: str, count: int, partitions: int, keys: int, workdir: Path, batch: int,
    linger_ms: int,
) -> list[Row]:  # fmt: skip
    """(j0) and (j) on the same ``count`` order events."""
    count -= count % 2
    topics = produce_orders(bootstrap, count, partitions, keys)
    rows = []
    for name, rule, actions in (
        ("(j0) rules: plain key glob, 2 topics, SQLite", PLAIN_RULE, count),
        ("(j) rules: all_of on a business key, 2 topics", JOIN_RULE, count // 2),
    ):
        rows.append(
            run_rules(name, bootstrap, topics, count, actions, [rule], workdir, batch, linger_ms)
        )
        print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
    return rows


def run_latency(
    bootstrap: str,
    store_url: str,
    workdir: Path,
    rate: int,
    seconds: float,
    batch: int,
    linger_ms: int,
    keys: int,
) -> dict[str, float]:
    """Offer ``rate`` events/s for ``seconds`` (from another process: bench.load);
    latency = the action's delivered_at - the record's Kafka CreateTime."""
    topic = create_topic(bootstrap, 3)
    log_file = workdir / "latency.jsonl"
    total = int(rate * seconds)
    target = LogTarget("log", log_file)
    with running_connector(bootstrap, topic, store_url, target, batch, linger_ms) as service:
        producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1}
        )
        # Warm-up event: the group has joined and the first batch has gone through.
        producer.produce(topic, key="warmup", value="{}")
        producer.flush(30)
        _wait(
            lambda: service.dispatcher.stats.delivered >= 1,
            120,
            "warm-up",
        )
        _offer_load(bootstrap, topic, rate, total, keys).wait(seconds * 3 + 120)
        _wait(  # + the two warm-up records, this function's and bench.load's
            lambda: service.dispatcher.stats.delivered >= total + 2,
            300,
            "latency run delivered",
        )
    create_ms: dict[str, int] = {}
    with open_store(store_url) as store:
        for event in store.iter_events():
            create_ms[event.event_id] = event.create_time
    latencies = []
    for line in log_file.read_text().splitlines():
        body = json.loads(line)
        if body["event_key"] == "warmup":
            continue
        latencies.append(body["delivered_at"] * 1000 - create_ms[body["event_ids"][0]])
    return _percentiles(rate, latencies)


def run_raw_latency(bootstrap: str, rate: int, seconds: float, keys: int) -> dict[str, float]:
    """The floor under the connector's latency on this machine: the same offered load read
    by a raw consumer (latency = when it got the record - the record's CreateTime)."""
    topic = create_topic(bootstrap, 3)
    total = int(rate * seconds)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,  # what the connector asks for at linger 10 ms
        }
    )
    consumer.subscribe([topic])
    try:
        while not consumer.assignment():
            consumer.poll(0.1)
        load = _offer_load(bootstrap, topic, rate, total, keys)
        latencies: list[float] = []
        deadline = time.monotonic() + seconds * 3 + 120
        while len(latencies) < total and time.monotonic() < deadline:
            msg = consumer.poll(0.1)  # each record as soon as it is there
            if msg is not None and msg.error() is None and msg.key() != b"warmup":
                latencies.append(time.time() * 1000 - msg.timestamp()[1])
        load.wait(60)
    finally:
        consumer.close()
    return _percentiles(rate, latencies)


class _Load:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._process = process

    def wait(self, timeout: float) -> None:
        _, stderr = self._process.communicate(timeout=timeout)
        if self._process.returncode != 0:
            raise RuntimeError(f"the load generator failed:\n{stderr[-2000:]}")


def _offer_load(bootstrap: str, topic: str, rate: int, total: int, keys: int) -> _Load:
    """bench.load in its own process: pacing it here would take the interpreter lock."""
    command = [sys.executable, "-m", "bench.load", "--bootstrap", bootstrap, "--topic", topic,
               "--rate", str(rate), "--count", str(total), "--keys", str(keys)]  # fmt: skip
    pipe = subprocess.PIPE
    return _Load(subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True))


def _percentiles(rate: int, latencies: list[float]) -> dict[str, float]:
    latencies = sorted(latencies)
    return {
        "offered_rate": rate,
        "events": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "max_ms": latencies[-1],
    }


def run_floor_row(
    bootstrap: str, topic: str, count: int, workdir: Path, batch: int, linger_ms: int
) -> Row:
    """(h): bench/floor.py on the same records, to a topic of its own, measured as (e)."""
    output = create_topic(bootstrap, 6)
    result = run_floor(bootstrap, topic, output, count, workdir / "h.db", batch, linger_ms)
    return Row("(h) floor: minimal durable loop, SQLite -> Kafka", result.events, result.seconds)


PEER_PYTHON = Path(
    os.environ.get(
        "KEC_BENCH_PEER_PYTHON",
        Path.home() / ".cache" / "kafka-event-connector" / "bench-peer" / "bin" / "python",
    )
)


def run_peer(bootstrap: str, topic: str, count: int) -> Row | None:
    """(f): quixstreams exactly-once in its own venv, on the same records."""
    if not PEER_PYTHON.exists():
        print(f"  (f) skipped: no peer venv at {PEER_PYTHON} (make bench creates it)")
        return None
    output = create_topic(bootstrap, 6)
    script = Path(__file__).resolve().parent / "peer" / "quix_app.py"
    done = subprocess.run(
        [str(PEER_PYTHON), str(script), "--bootstrap", bootstrap, "--input", topic,
         "--output", output, "--count", str(count)],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the quixstreams peer failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Row("(f) quixstreams exactly-once -> Kafka topic", result["records"], result["seconds"])


@contextmanager
def receiver(delay_ms: float) -> Iterator[str]:
    """A webhook receiver in another process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.receiver", "--delay-ms", str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        yield f"http://127.0.0.1:{port}/actions"
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def fsync_rate(workdir: Path, seconds: float = 2.0) -> float:
    path = workdir / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            os.write(fd, b"x" * 128)
            os.fsync(fd)
            n += 1
        return n / seconds
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=200_000, help="events for (a)-(c), (e), (f) and (h)"
    )
    parser.add_argument("--per-event", type=int, default=2_000, help="events for (d)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--linger-ms", type=int, default=10)
    parser.add_argument("--latency-rate", type=int, default=5_000)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--webhook-events", type=int, default=30_000, help="events for (g)")
    parser.add_argument("--webhook-delay-ms", type=float, default=10.0)
    parser.add_argument(
        "--webhook-concurrency", type=int, default=256, help="(g): requests in flight"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip (c)")
    parser.add_argument(
        "--correlation-events", type=int, default=100_000, help="events for (j0) and (j)"
    )
    parser.add_argument(
        "--correlation-only", action="store_true", help="run (a), (j0) and (j) only"
    )
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="skip (h), the floor: a minimal Python loop doing (e)'s durable work on the same "
        "records (bench/floor.py); without it there is no 'vs (h)' column",
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="*",
        default=[1, 2],
        help="rows (i): `run -c` with each pipeline.processes given (none: skip them)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        nargs="*",
        default=[1, 2, 3],
        help="the scale row: that many `run -c` instances on one PostgreSQL store, in turn, "
        "each on --events new records: events/s and CPU-seconds per 1,000 events (none: skip)",
    )
    parser.add_argument(
        "--memory-events",
        type=int,
        default=1_000_000,
        help="the memory row: one `run -c` over this many events, its RSS after a tenth "
        "and at the end (0: skip it)",
    )
    parser.add_argument(
        "--event-ids", action="store_true", help="records carry an event-id header (dedup by id)"
    )
    parser.add_argument("--json", type=Path, default=Path("bench/out/throughput.json"))
    args = parser.parse_args(argv)

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="kec-bench-") as tmp:
        workdir = Path(tmp)
        cluster: KafkaCluster = stack.enter_context(provide_kafka())
        bootstrap = cluster.bootstrap_servers
        print(f"broker: Apache Kafka {cluster.version} ({cluster.kind}) at {bootstrap}")
        if args.correlation_only:
            return _correlation_only(bootstrap, workdir, args)
        pg_dsn = None
        if not args.no_postgres:
            server = stack.enter_context(provide_postgres())
            pg_dsn = stack.enter_context(scratch_database(server.dsn, prefix="bench_"))
        topic = create_topic(bootstrap, args.partitions)
        t0 = time.perf_counter()
        produce(bootstrap, topic, args.events, args.keys, args.event_ids)
        print(f"produced {args.events} events to {topic} in {time.perf_counter() - t0:.1f}s")

        rows = [run_raw(bootstrap, topic, args.events, args.batch)]
        print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        rows.append(
            run_connector(
                "(b) connector, SQLite, log target",
                bootstrap,
                topic,
                args.events,
                f"sqlite:///{workdir / 'b.db'}",
                workdir,
                args.batch,
                args.linger_ms,
            )
        )
        print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        rows.append(
            run_connector(
                "(b0) (b) with checkpoint.lineage: false",
                bootstrap,
                topic,
                args.events,
                f"sqlite:///{workdir / 'b0.db'}",
                workdir,
                args.batch,
                args.linger_ms,
                lineage=False,
            )
        )
        print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        if pg_dsn:
            rows.append(
                run_connector(
                    "(c) connector, PostgreSQL, log target",
                    bootstrap,
                    topic,
                    args.events,
                    pg_dsn,
                    workdir,
                    args.batch,
                    args.linger_ms,
                )
            )
            print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        small = create_topic(bootstrap, args.partitions)
        produce(bootstrap, small, args.per_event, args.keys)
        rows.append(
            run_connector(
                "(d) connector, SQLite, per-event (batch 1)",
                bootstrap,
                small,
                args.per_event,
                f"sqlite:///{workdir / 'd.db'}",
                workdir,
                1,
                0,
            )
        )
        print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        step_rate, step_transactions = steps.run_steps(
            f"sqlite:///{workdir / 'steps.db'}", args.per_event, 64
        )
        print(f"  (d2) durable steps, 64 at once: {step_rate:,.0f} steps/s "
              f"in {step_transactions} transactions")  # fmt: skip
        actions_topic = create_topic(bootstrap, args.partitions)
        rows.append(
            run_connector(
                "(e) connector, SQLite, kafka target",
                bootstrap,
                topic,
                args.events,
                f"sqlite:///{workdir / 'e.db'}",
                workdir,
                args.batch,
                args.linger_ms,
                KafkaTarget("actions", actions_topic, bootstrap),
            )
        )
        print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        peer = run_peer(bootstrap, topic, args.events)
        if peer is not None:
            rows.append(peer)
            print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        hooks = create_topic(bootstrap, args.partitions)
        produce(bootstrap, hooks, args.webhook_events, args.keys)
        with receiver(args.webhook_delay_ms) as url:
            rows.append(
                run_connector(
                    f"(g) connector, SQLite, webhook ({args.webhook_delay_ms:g} ms receiver)",
                    bootstrap,
                    hooks,
                    args.webhook_events,
                    f"sqlite:///{workdir / 'g.db'}",
                    workdir,
                    args.batch,
                    args.linger_ms,
                    WebhookTarget("hook", url, concurrency=args.webhook_concurrency),
                )
            )
        print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        for processes in args.processes:
            seconds = fleet.run_processes(
                processes, bootstrap, args.events, workdir, partitions=args.partitions,
                keys=args.keys, batch=args.batch, linger_ms=args.linger_ms,
            )  # fmt: skip
            rows.append(Row(f"(i) run -c, SQLite, kafka target, processes {processes}",
                            args.events, seconds))  # fmt: skip
            print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        rows.extend(
            correlation_rows(
                bootstrap, args.correlation_events, args.partitions, args.keys, workdir,
                args.batch, args.linger_ms,
            )
        )  # fmt: skip
        if not args.no_floor:
            rows.append(
                run_floor_row(bootstrap, topic, args.events, workdir, args.batch, args.linger_ms)
            )
            print(f"  {rows[-1].name}: {rows[-1].rate:,.0f} events/s")
        scale: list[fleet.ScaleRow] = []
        if pg_dsn:
            for instances in args.scale:
                with scratch_database(server.dsn, prefix="bench_scale_") as store_url:
                    scale.append(fleet.run_scale(
                        instances, bootstrap, args.events, store_url, workdir,
                        partitions=args.partitions, keys=args.keys, batch=args.batch,
                        linger_ms=args.linger_ms,
                    ))  # fmt: skip
                r = scale[-1]
                print(f"  scale, {instances} instance(s), PostgreSQL: {r.rate:,.0f} events/s, "
                      f"{r.cpu_per_1000:.3f} CPU-s per 1,000 events")  # fmt: skip
        memory = None
        if args.memory_events:
            big = create_topic(bootstrap, args.partitions)
            produce(bootstrap, big, args.memory_events, args.keys)
            memory = fleet.run_memory(
                bootstrap, big, args.memory_events, workdir, args.batch, args.linger_ms
            )
            print(f"  memory: RSS {memory.rss_early_mib:.0f} MiB after "
                  f"{args.memory_events // 10:,} events, {memory.rss_end_mib:.0f} MiB after "
                  f"{args.memory_events:,}")  # fmt: skip
        fsyncs = fsync_rate(workdir)
        # The memory row leaves about 800 MiB not yet on disk (its store, its log, the
        # broker's segments). The kernel writes it back ~30 s later, in the middle of the
        # latency run, whose fsyncs then wait behind it: p99 146-298 ms, against 14-16
        # ms with this sync first (measured). Each run starts from a disk at rest.
        os.sync()
        floor = run_raw_latency(bootstrap, args.latency_rate, args.latency_seconds, args.keys)
        latency = run_latency(
            bootstrap,
            f"sqlite:///{workdir / 'lat.db'}",
            workdir,
            args.latency_rate,
            args.latency_seconds,
            args.batch,
            args.linger_ms,
            args.keys,
        )

    raw = rows[0].rate
    by_name = {row.name[:3]: row for row in rows}
    peer_ratio = (
        by_name["(e)"].rate / by_name["(f)"].rate if "(f)" in by_name and "(e)" in by_name else None
    )
    floor_rate = by_name["(h)"].rate if "(h)" in by_name else None

    def vs_floor(row: Row) -> float | None:
        return row.rate / floor_rate if floor_rate else None

    print()
    header = f"{'run':<48} {'events':>8} {'seconds':>8} {'events/s':>10} {'vs (a)':>7}"
    print(header + (f" {'vs (h)':>7}" if floor_rate else ""))
    for row in rows:
        ratio = vs_floor(row)
        print(
            f"{row.name:<48} {row.events:>8} {row.seconds:>8.2f} {row.rate:>10,.0f} "
            f"{row.rate / raw:>7.3f}" + (f" {ratio:>7.3f}" if ratio is not None else "")
        )
    if peer_ratio is not None:
        print(
            "connector / quixstreams exactly-once, same records to a Kafka topic: "
            f"{peer_ratio:.2f}x"
        )
    if floor_rate:
        for letter, what in (("(b)", "SQLite log target"), ("(e)", "SQLite kafka target")):
            if letter in by_name:
                ratio = by_name[letter].rate / floor_rate
                print(f"connector {letter}, {what} / the floor (h): {ratio:.2f}x")
        if "(f)" in by_name:
            print(f"quixstreams (f) / the floor (h): {by_name['(f)'].rate / floor_rate:.2f}x")
    if "(f)" in by_name:
        for row in rows:
            if row.name.startswith("(i)"):
                print(f"{row.name} / quixstreams (f): {row.rate / by_name['(f)'].rate:.2f}x")
    print(f"disk fsync rate (128 B append + fsync): {fsyncs:,.0f}/s")
    if "(d)" in by_name:
        print(f"per-event (d) / the fsync rate: {by_name['(d)'].rate / fsyncs:.2f}x")
    print(
        f"(d2) durable steps (wait_for_event, 64 at once, group commit): {step_rate:,.0f}/s in "
        f"{step_transactions} transactions for {args.per_event}; "
        f"/ the fsync rate: {step_rate / fsyncs:.2f}x"
    )
    for r in scale:
        print(
            f"scale, {r.instances} instance(s) on one PostgreSQL store: {r.rate:,.0f} events/s, "
            f"{r.cpu_per_1000:.3f} CPU-seconds per 1,000 events"
        )
    if memory is not None:
        print(
            f"memory: RSS {memory.rss_early_mib:.0f} MiB after {memory.events // 10:,} events, "
            f"{memory.rss_end_mib:.0f} MiB after {memory.events:,} ({memory.growth:+.0%})"
        )
    print(
        f"latency at {latency['offered_rate']:,} events/s offered, {latency['events']} events: "
        f"p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms, "
        f"max {latency['max_ms']:.1f} ms"
    )
    print(
        f"  the same load read by a raw consumer (the machine's latency floor): "
        f"p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms, max {floor['max_ms']:.1f} ms"
    )
    report = {
        "command": " ".join(["python -m bench.throughput", *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "broker": {"version": cluster.version, "kind": cluster.kind},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "runs": [
            {
                **asdict(r),
                "events_per_s": r.rate,
                "ratio_to_raw": r.rate / raw,
                "ratio_to_floor": vs_floor(r),
            }
            for r in rows
        ],
        "fsync_per_s": fsyncs,
        "durable_steps": {
            "steps": args.per_event,
            "concurrency": 64,
            "per_s": step_rate,
            "transactions": step_transactions,
            "ratio_to_fsync": step_rate / fsyncs,
        },
        "scale": [
            {**asdict(r), "events_per_s": r.rate, "cpu_seconds_per_1000": r.cpu_per_1000}
            for r in scale
        ],
        "memory": None if memory is None else {**asdict(memory), "growth": memory.growth},
        "connector_vs_quixstreams": peer_ratio,
        "floor_per_s": floor_rate,
        "latency": latency,
        "latency_raw_consumer": floor,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"JSON: {args.json}")
    return 0


def _correlation_only(bootstrap: str, workdir: Path, args: argparse.Namespace) -> int:
    """``--correlation-only``: (a) on the same number of plain events, then (j0) and (j)."""
    topic = create_topic(bootstrap, args.partitions)
    produce(bootstrap, topic, args.correlation_events, args.keys)
    rows = [run_raw(bootstrap, topic, args.correlation_events, args.batch)]
    rows += correlation_rows(
        bootstrap, args.correlation_events, args.partitions, args.keys, workdir, args.batch,
        args.linger_ms,
    )  # fmt: skip
    print()
    print(f"{'run':<48} {'events':>8} {'seconds':>8} {'events/s':>10} {'vs (a)':>7}")
    for row in rows:
        print(
            f"{row.name:<48} {row.events:>8} {row.seconds:>8.2f} {row.rate:>10,.0f} "
            f"{row.rate / rows[0].rate:>7.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
