"""The benchmark's floor loop (bench/floor.py): its pure part, without a broker.

``make bench`` measures the loop; these check that what it measures is the work it claims:
every record parsed, one action per record with a deterministic id, the batch's events and
actions in one blob, the next offset of each partition.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from bench.floor import RULE, Store, action_id, build_batch


@dataclass(frozen=True)
class Record:
    """The part of ``confluent_kafka.Message`` the floor reads."""

    raw_key: bytes | None
    raw_value: bytes | None
    where: tuple[str, int, int]
    timestamp_ms: int = 1_700_000_000_000

    def topic(self) -> str:
        return self.where[0]

    def partition(self) -> int:
        return self.where[1]

    def offset(self) -> int:
        return self.where[2]

    def key(self) -> bytes | None:
        return self.raw_key

    def value(self) -> bytes | None:
        return self.raw_value

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)


RECORDS = [
    Record(b"customer-1", b'{"seq": 1}', ("orders", 0, 7)),
    Record(b"customer-2", b'{"seq": 2}', ("orders", 1, 3)),
    Record(b"customer-1", b'{"seq": 3}', ("orders", 0, 8)),
]


def test_action_id_is_deterministic_and_depends_on_rule_and_event() -> None:
    assert action_id(RULE, "orders/0/7") == action_id(RULE, "orders/0/7")
    assert len(action_id(RULE, "orders/0/7")) == 32
    assert action_id(RULE, "orders/0/7") != action_id(RULE, "orders/0/8")
    assert action_id(RULE, "orders/0/7") != action_id("other", "orders/0/7")


def test_one_action_per_record_and_one_blob_per_batch() -> None:
    batch = build_batch(RECORDS)
    body = orjson.loads(batch.blob)
    assert [e["id"] for e in body["events"]] == ["orders/0/7", "orders/1/3", "orders/0/8"]
    assert body["events"][1]["value"] == {"seq": 2}
    ids = [a["action_id"] for a in body["actions"]]
    assert ids == [action_id(RULE, e["id"]) for e in body["events"]]
    assert batch.offsets == {("orders", 0): 9, ("orders", 1): 4}
    # What is produced is what was stored: same bytes, the key and the action-id header.
    for (key, value, headers), stored, record in zip(
        batch.outgoing, body["actions"], RECORDS, strict=True
    ):
        assert orjson.loads(value) == stored
        assert key == record.raw_key
        assert dict(headers)["action-id"] == stored["action_id"].encode()
        assert stored["payload"]["value"] == orjson.loads(record.raw_value or b"null")


def test_rules_are_looked_up_by_key_with_a_default() -> None:
    batch = build_batch(RECORDS, {"customer-2": "vip"})
    rules = [a["rule"] for a in orjson.loads(batch.blob)["actions"]]
    assert rules == [RULE, "vip", RULE]


def test_a_value_that_is_not_json_is_refused() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        build_batch([Record(b"k", b"{not json", ("orders", 0, 0))])


def test_the_store_keeps_one_row_per_batch_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "floor.db")
    first, second = build_batch(RECORDS[:2]), build_batch(RECORDS[2:])
    store.write(first)
    store.write(second)
    store.close()
    db = sqlite3.connect(tmp_path / "floor.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        rows = db.execute("SELECT offsets, body FROM batches ORDER BY seq").fetchall()
    finally:
        db.close()
    assert [orjson.loads(offsets) for offsets, _ in rows] == [
        [["orders", 0, 8], ["orders", 1, 4]],
        [["orders", 0, 9]],
    ]
    assert [bytes(body) for _, body in rows] == [first.blob, second.blob]
