"""Poison records: the dead-letter copy fits the topic, the store row is capped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpoint.base import STORED_BYTES, DeadRecord
from kec.deadletter import DLQ_MAX_BYTES, Poison
from kec.errors import DecodeError


def _poison(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Poison:
    return Poison("orders", 3, 17, "bad", "DecodeError", key, value, headers)


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)


def test_a_small_record_goes_as_it_came_with_its_headers_first() -> None:
    key, value, headers = _poison(b"k", b"v", [("origin", b"x")]).dlq_copy()
    assert (key, value) == (b"k", b"v")
    assert headers[0] == ("origin", b"x")
    names = [name for name, _ in headers]
    assert names[1:] == [
        "error",
        "error-class",
        "source-topic",
        "source-partition",
        "source-offset",
    ]


def test_an_oversized_record_is_truncated_and_says_so() -> None:
    big = b"v" * (3 * DLQ_MAX_BYTES)
    key, value, headers = _poison(b"k" * 5000, big, []).dlq_copy()
    assert _size(key, value, headers) < DLQ_MAX_BYTES
    assert value is not None and big.startswith(value) and len(value) > DLQ_MAX_BYTES // 2
    notes = dict(headers)
    assert notes["dlq-truncated"] == f"key=5000,value={len(big)}".encode()


def test_oversized_headers_are_dropped_and_counted() -> None:
    headers_in = [(f"h{i}", b"x" * 100_000) for i in range(5)]
    key, value, headers = _poison(b"k", b"v", headers_in).dlq_copy()
    assert dict(headers)["dlq-headers-dropped"] == b"5"
    assert not any(name.startswith("h") and name[1:].isdigit() for name, _ in headers)
    assert (key, value) == (b"k", b"v")


@given(
    key=st.one_of(st.none(), st.binary(max_size=50)),
    key_len=st.integers(0, 2 * DLQ_MAX_BYTES),
    value_len=st.integers(0, 3 * DLQ_MAX_BYTES),
    header_lens=st.lists(st.integers(0, 400_000), max_size=6),
)
def test_every_copy_fits(
    key: bytes | None, key_len: int, value_len: int, header_lens: list[int]
) -> None:
    raw_key = None if key is None else key + b"k" * key_len
    headers = [(f"h{i}", b"x" * n) for i, n in enumerate(header_lens)]
    copy = _poison(raw_key, b"v" * value_len, headers).dlq_copy()
    assert _size(*copy) < DLQ_MAX_BYTES


def test_the_store_row_is_capped() -> None:
    row = DeadRecord.of(_poison(b"k" * (2 * STORED_BYTES), b"v" * (2 * STORED_BYTES), []))
    assert row.key is not None and len(row.key) == STORED_BYTES
    assert row.value is not None and len(row.value) == STORED_BYTES
    assert (row.topic, row.partition, row.offset, row.error) == ("orders", 3, 17, "bad")


class _Msg:
    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def headers(self) -> list[tuple[str, bytes | None]]:
        return [("a", None)]

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return 9


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (DecodeError("record has no key"), "record has no key"),
        (RecursionError("maximum recursion depth exceeded"), "RecursionError: maximum recursion"),
    ],
)
def test_the_reason_names_the_failure(exc: BaseException, error: str) -> None:
    poison = Poison.of(_Msg(), exc)
    assert poison.error.startswith(error)
    assert poison.error_class == type(exc).__name__
    assert poison.headers == [("a", b"")]
