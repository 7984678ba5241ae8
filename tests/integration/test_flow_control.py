"""Per-target flow control of a real ``event-connector run -c FILE`` process against the
real broker (docs/architecture.md, "Flow control"):

* a webhook that answers slowly, ``max_in_flight: 4``, a 10,000-event burst and a small
  ``pipeline.outbox_max_pending``: the receiver never sees more than 4 requests at once,
  every action arrives exactly once (by idempotency key), the partitions pause (the
  metrics and the log say so) and the process's resident memory stays bounded;
* ``rate: {per_second: 200}``: the rate the receiver sees over the run is the limit's.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from confluent_kafka import Producer

from devkit.server import free_port
from tests.support import start_run, wait_for

BURST = 5_000
DELAY = 0.01  # the receiver's answer time: 5,000 x 10 ms / 4 at once ~ 12.5 s
MAX_IN_FLIGHT = 4
MAX_PENDING = 200  # pipeline.outbox_max_pending: small, so the burst must pause
BATCH = 100  # pipeline.batch_size: the most a batch adds beyond the bound
VALUE_BYTES = 8_000  # each event's value: what an unbounded outbox would pile up
# Resident memory the burst may add to the warmed-up process. What the run holds for it
# (measured: about 30 MiB in all): SQLite's page cache as the 40 MB of events are written
# (capped at 16 MiB by the store's cache_size; 15 MiB less with a 2 MiB cache),
# librdkafka's buffers (queued.max.messages.kbytes, fetch.max.bytes: about 7 MiB outside
# the main heap), at most MAX_PENDING + BATCH actions in the outbox with their events and
# the allocator's slack (about 8 MiB). Holding the whole burst instead (outbox_max_pending:
# 100000) adds about 80 MiB. Before kec.jsontext.owned copied what an action keeps, each
# waiting action held orjson's 32 KiB buffer for its 4 KB payload: 36-47 MiB in all. (These
# figures were measured with 10,000 events of 4 KB: the same 40 MB, in twice the time.)
RSS_GROWTH_BOUND_KB = 40 * 1024


class SlowReceiver:
    """A webhook endpoint in its own threads that answers after ``delay``, counting the
    requests it holds at once and each ``Idempotency-Key`` it accepted (with when)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.keys: Counter[str] = Counter()
        self.times: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                key = self.headers.get("idempotency-key", "")
                with receiver.lock:
                    receiver.now += 1
                    receiver.peak = max(receiver.peak, receiver.now)
                if receiver.delay:
                    time.sleep(receiver.delay)  # the slow target, not synchronisation
                # Counted out before the answer is written: once it is, the connector may
                # send the next request before this thread runs again.
                with receiver.lock:
                    receiver.now -= 1
                    receiver.keys[key] += 1
                    receiver.times.append(time.monotonic())
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered(self) -> int:
        with self.lock:
            return len(self.keys)


@contextmanager
def receiving(delay: float) -> Iterator[SlowReceiver]:
    receiver = SlowReceiver(delay)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(10)


def _config(tmp_path: Path, bootstrap: str, topic: str, group: str, hook: str, port: int) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            kafka:
              bootstrap_servers: "{bootstrap}"
              properties: {{queued.max.messages.kbytes: 2048, fetch.max.bytes: 1048576}}
            group_id: {group}
            namespaces:
              shop: {{topics: [{topic}]}}
            checkpoint: {{backend: sqlite, path: {tmp_path}/state/checkpoints.db}}
            pipeline: {{batch_size: {BATCH}, outbox_max_pending: {MAX_PENDING}}}
            metrics: {{host: 127.0.0.1, port: {port}}}
            targets:
            {textwrap.indent(hook, "  ")}
            rules:
              - {{name: each, namespace: shop, key: "*", action: notify, target: hook}}
            """
        )
    )
    return path


def _produce(bootstrap: str, topic: str, start: int, n: int, size: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    pad = "x" * size
    for i in range(start, start + n):
        producer.produce(topic, key=f"k{i % 997}", value=json.dumps({"i": i, "pad": pad}))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kec_"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class _Sampler:
    """Samples the run's resident memory and metrics every 50 ms in a thread."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port
        self.peak_rss = 0
        self.paused_seen = False
        self.peak_in_flight = 0.0
        self.scrapes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, _rss_kb(self.pid))
                m = _metrics(self.port)
            except OSError:
                continue
            self.scrapes += 1
            self.paused_seen = self.paused_seen or m.get("kec_paused") == 1.0
            in_flight = m.get('kec_target_in_flight{target="hook"}', 0.0)
            self.peak_in_flight = max(self.peak_in_flight, in_flight)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _stop(run: subprocess.Popen[bytes], log: Path) -> None:
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 0, log.read_text()[-3000:]


def test_a_slow_target_with_max_in_flight_pauses_the_partitions_and_loses_nothing(
    tmp_path: Path, bootstrap: str, new_topic: object, group_id: str
) -> None:
    topic = new_topic(3)  # type: ignore[operator]
    port = free_port()
    with receiving(DELAY) as receiver:
        hook = (
            f"hook: {{type: webhook, url: {receiver.url!r}, concurrency: 16, "
            f"max_in_flight: {MAX_IN_FLIGHT}}}\n"
        )
        config = _config(tmp_path, bootstrap, topic, group_id, hook, port)
        log = tmp_path / "run.log"
        run = start_run(config, log)
        try:
            # Warm up (imports, connections, the first batches), then the baseline.
            _produce(bootstrap, topic, 0, 50, VALUE_BYTES)
            wait_for(lambda: receiver.delivered() == 50, timeout=60, what="the warm-up")
            wait_for(lambda: _metrics(port), timeout=10, what="/metrics")
            baseline = _rss_kb(run.pid)
            with _Sampler(run.pid, port) as sampler:
                _produce(bootstrap, topic, 50, BURST, VALUE_BYTES)
                wait_for(
                    lambda: receiver.delivered() == BURST + 50 or run.poll() is not None,
                    timeout=100,
                    interval=0.2,
                    what="every action of the burst",
                )
                assert run.poll() is None, log.read_text()[-3000:]

                def counted() -> dict[str, float]:  # empty: not yet
                    m = _metrics(port)
                    done = m.get('kec_actions_delivered_by_target_total{target="hook"}')
                    return m if done == BURST + 50 else {}

                final = wait_for(counted, timeout=10, what="the metrics to count every delivery")
        finally:
            if run.poll() is None:
                _stop(run, log)
        text = log.read_text()
    print(f"resident memory: {baseline} kB warmed up, {sampler.peak_rss} kB at the peak")

    # Every action once, never more than 4 at the receiver at once.
    assert len(receiver.keys) == BURST + 50
    assert max(receiver.keys.values()) == 1, receiver.keys.most_common(3)
    assert 1 <= receiver.peak <= MAX_IN_FLIGHT
    assert sampler.scrapes > 20 and sampler.peak_in_flight <= MAX_IN_FLIGHT
    # The partitions paused, in the metrics and in the log.
    assert sampler.paused_seen
    assert final["kec_backpressure_pauses_total"] >= 1
    assert final["kec_backpressure_seconds_total"] > 0
    assert final['kec_target_throttled_seconds_total{target="hook"}'] > 1.0
    assert re.search(r"backpressure: \d+ actions wait for delivery \(limit 200\): pausing", text)
    assert re.search(r"backpressure: \d+ actions wait for delivery: resuming partitions", text)
    # Rate-limited: one pause line in 30 s however often it paused.
    assert text.count(": pausing ") <= 1 + int(final["kec_backpressure_seconds_total"] // 30) + 2
    # Memory stayed bounded.
    growth = sampler.peak_rss - baseline
    assert growth < RSS_GROWTH_BOUND_KB, (baseline, sampler.peak_rss)


def test_a_rate_limit_is_the_rate_the_target_sees(
    tmp_path: Path, bootstrap: str, new_topic: object, group_id: str
) -> None:
    topic = new_topic(3)  # type: ignore[operator]
    port = free_port()
    events, per_second, burst = 1_500, 200, 20
    with receiving(0.0) as receiver:
        hook = (
            f"hook: {{type: webhook, url: {receiver.url!r}, "
            f"rate: {{per_second: {per_second}, burst: {burst}}}}}\n"
        )
        config = _config(tmp_path, bootstrap, topic, group_id, hook, port)
        log = tmp_path / "run.log"
        run = start_run(config, log)
        try:
            _produce(bootstrap, topic, 0, events)
            wait_for(
                lambda: receiver.delivered() == events or run.poll() is not None,
                timeout=60,
                interval=0.2,
                what="every action",
            )
            assert run.poll() is None, log.read_text()[-3000:]
            final = _metrics(port)
        finally:
            if run.poll() is None:
                _stop(run, log)
    assert max(receiver.keys.values()) == 1
    times = sorted(receiver.times)
    # After the first burst of tokens, the rest came at the bucket's rate.
    span = times[-1] - times[burst]
    achieved = (events - burst - 1) / span
    assert 0.85 * per_second <= achieved <= 1.05 * per_second, achieved
    assert final['kec_target_throttled_seconds_total{target="hook"}'] > 0.5 * span
