"""Hostile records through the real connector process on the real broker.

Hypothesis draws the mix (a random seed, printed, and from it the share of poison,
10–30 %); a deterministic generator
turns it into 10,000 records produced with plain confluent-kafka: well-formed events
(random keys, text, binary and JSON values, extra headers of random bytes, some with
explicit ids) interleaved with poison of every kind the codec refuses (no key,
tombstones, bytes that are not UTF-8 in a key, value or metadata header, deep and broken
JSON declared as JSON, values over the limit, oversized and NUL-holding metadata, a
namespace header that is not the topic's, an explicit id shaped like a Kafka position).

Checked: every poison record is on the dead-letter topic with its reason headers and in
the dead-records table; every well-formed record has its action delivered, and nothing
else is; the connector never stops and never stalls (every wait is bounded). Then the
same with SIGKILLs in the middle: nothing lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoint import open_store
from kec.action import action_id
from tests.chaos.fleet import Fleet
from tests.support import wait_for

RECORDS = 10_000
MAX_EVENT_BYTES = 65_536
Headers = list[tuple[str, bytes | None]]
Record = tuple[bytes | None, bytes | None, Headers]


def _text(rng: random.Random, n: int) -> str:
    return "".join(
        chr(rng.choice([rng.randint(33, 126), rng.randint(0xA0, 0x2FFF)])) for _ in range(n)
    )


def _good(rng: random.Random, i: int) -> tuple[Record, str | None]:
    """A well-formed record and its explicit id (None: known by its offset)."""
    key = f"{_text(rng, rng.randint(1, 12))}-{i}".encode()
    kind = rng.random()
    headers: Headers = [
        (f"x-{j}", rng.randbytes(rng.randint(0, 40))) for j in range(rng.randint(0, 3))
    ]
    if kind < 0.3:
        value = json.dumps({"n": i, "s": _text(rng, 20)}).encode()
        headers.append(("content-type", b"application/json"))
    elif kind < 0.45:
        value = rng.randbytes(rng.randint(0, 200))
        headers.append(("content-type", b"application/octet-stream"))
    else:
        value = _text(rng, rng.randint(0, 80)).encode()
    explicit = None
    if rng.random() < 0.3:
        explicit = f"id-{uuid.UUID(int=rng.getrandbits(128))}"
        headers.append(("event-id", explicit.encode()))
    if rng.random() < 0.2:
        headers.append(("namespace", b"fuzz"))  # its own namespace: fine
    return (key, value, headers), explicit


def _poison(rng: random.Random, topic: str) -> Record:
    kind = rng.randrange(12)
    key = f"p{rng.getrandbits(32)}".encode()
    if kind == 0:
        return None, b"no key", []
    if kind == 1:
        return key, None, []  # tombstone
    if kind == 2:
        return b"\xff\xfe" + rng.randbytes(4), b"v", []
    if kind == 3:
        return key, b"\xc3\x28" + rng.randbytes(10), []  # not UTF-8, not declared binary
    if kind == 4:
        depth = rng.randint(2_000, 100_000)
        return key, b"[" * depth + b"]" * depth, [("content-type", b"application/json")]
    if kind == 5:
        return key, b'{"broken": ', [("content-type", b"application/json")]
    if kind == 6:
        return key, b"x" * (MAX_EVENT_BYTES + rng.randint(1, 200_000)), []
    if kind == 7:
        return key, b"v", [("namespace", b"admin")]  # another namespace's rules
    if kind == 8:
        return key, b"v", [("sender", b"\xff\xff")]
    if kind == 9:
        return key, b"v", [("context", b"c" * rng.randint(1025, 300_000))]
    if kind == 10:
        return key, b"v", [("event-id", f"{topic}/0/{rng.randint(0, 10**6)}".encode())]
    return b"k\x00" + key, b"v", []


def _produce(
    bootstrap: str, topic: str, rng: random.Random, poison_share: float
) -> tuple[set[str], set[tuple[int, int]]]:
    """Produce the mix; return the expected action ids and the poison (partition, offset)s."""
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.max.bytes": 2_000_000}
    )
    expected: set[str] = set()
    poison: set[tuple[int, int]] = set()
    errors: list[str] = []

    def report(good: bool, explicit: str | None) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            elif good:
                eid = explicit or f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
                expected.add(action_id("all", (eid,)))
            else:
                poison.add((msg.partition(), msg.offset()))

        return done

    for i in range(RECORDS):
        if rng.random() < poison_share:
            (key, value, headers), good, explicit = _poison(rng, topic), False, None
        else:
            (key, value, headers), explicit = _good(rng, i)
            good = True
        while True:
            try:
                producer.produce(
                    topic, key=key, value=value, headers=headers, on_delivery=report(good, explicit)
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert not errors, errors[:3]
    return expected, poison


def _dead_letters(bootstrap: str, dlq: str, wanted: int) -> dict[tuple[int, int], dict[str, bytes]]:
    """(source partition, offset) -> the copy's headers, read until ``wanted`` are seen."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dlq])
    seen: dict[tuple[int, int], dict[str, bytes]] = {}

    def enough() -> bool:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() is None:
                headers = {k: v or b"" for k, v in msg.headers() or []}
                seen[(int(headers["source-partition"]), int(headers["source-offset"]))] = headers
        return len(seen) >= wanted

    try:
        wait_for(enough, timeout=120, what=f"{wanted} dead letters")
    finally:
        consumer.close()
    return seen


def _logged(path: Path) -> set[str]:
    if not path.exists():
        return set()
    *complete, _ = path.read_bytes().split(b"\n")
    return {json.loads(line)["action_id"] for line in complete}


def _fuzz(
    tmp_path: Path,
    bootstrap: str,
    new_topic: Callable[..., str],
    seed: int,
    share: float,
    kills: int,
) -> None:
    topic, dlq = new_topic(3), new_topic(1)
    log = tmp_path / "actions.jsonl"
    config = tmp_path / "connector.yaml"
    config.write_text(
        f"""
kafka: {{bootstrap_servers: "{bootstrap}"}}
group_id: fuzz-{uuid.uuid4().hex[:8]}
namespaces: {{fuzz: {{topics: ["{topic}"]}}, admin: {{topics: ["{topic}-admin"]}}}}
checkpoint: {{path: "{tmp_path / "store.db"}"}}
dead_letter_topic: "{dlq}"
pipeline: {{batch_size: 500, linger_ms: 20, max_event_bytes: {MAX_EVENT_BYTES}}}
targets: {{log: {{type: log, path: "{log}"}}}}
rules:
  - {{name: all, namespace: fuzz, key: "*", action: notify}}
  - {{name: admin-only, namespace: admin, key: "*", action: notify}}
"""
    )
    rng = random.Random(seed)
    fleet = Fleet(config, tmp_path)
    fleet.start("fuzz")
    stop_chaos = threading.Event()

    def chaos() -> None:
        for _ in range(kills):
            if stop_chaos.wait(rng.uniform(1.0, 2.5)):
                return
            fleet.signal("fuzz", signal.SIGKILL)
            fleet.start("fuzz")

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    try:
        expected, poison = _produce(bootstrap, topic, rng, share)
        wait_for(
            lambda: (killer.is_alive() or fleet.alive() is None) and expected <= _logged(log),
            timeout=300,
            interval=0.5,
            what="every well-formed record acted on",
        )
        killer.join(60)
        with open_store(f"sqlite://{tmp_path / 'store.db'}") as store:
            wait_for(
                lambda: len(store.list_dead_records(limit=RECORDS)) >= len(poison),
                timeout=120,
                what="every poison record recorded",
            )
            dead = {(r.partition, r.offset): r for r in store.list_dead_records(limit=RECORDS)}
            fired = store.count_actions_by_rule()
        fleet.alive()
    finally:
        stop_chaos.set()
        fleet.stop()
    assert _logged(log) == expected, "every well-formed record once, and nothing else"
    assert fired == {"all": len(expected)}, "no namespace header reached admin's rules"
    assert set(dead) == poison
    assert all(r.error and r.error_class for r in dead.values())
    copies = _dead_letters(bootstrap, dlq, len(poison))
    assert set(copies) == poison
    for headers in copies.values():
        assert headers["source-topic"] == topic.encode()
        assert headers["error"] and headers["error-class"]
    print(
        f"\nfuzz seed {seed} (replay: KEC_FUZZ_SEED={seed}): {len(expected)} events acted on, "
        f"{len(poison)} poison, {kills} kills"
    )


# A truly random source even for Hypothesis's first example: each run draws a new mix. The
# seed is printed; a failure replays with KEC_FUZZ_SEED=<seed>.
MIXES = st.randoms(use_true_random=True)


def _seed(rng: random.Random) -> tuple[int, float]:
    seed = int(os.environ.get("KEC_FUZZ_SEED") or rng.getrandbits(32))
    return seed, 0.1 + random.Random(seed).random() * 0.2


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(mix=MIXES)
def test_hostile_records_go_to_the_dead_letters_and_the_rest_on(
    tmp_path_factory: Any, bootstrap: str, new_topic: Callable[..., str], mix: random.Random
) -> None:
    seed, share = _seed(mix)
    _fuzz(tmp_path_factory.mktemp("fuzz"), bootstrap, new_topic, seed, share, kills=0)


@settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck))
@given(mix=MIXES)
def test_hostile_records_and_sigkills_lose_nothing(
    tmp_path_factory: Any, bootstrap: str, new_topic: Callable[..., str], mix: random.Random
) -> None:
    seed, share = _seed(mix)
    _fuzz(tmp_path_factory.mktemp("fuzz-kill"), bootstrap, new_topic, seed, share, kills=3)
