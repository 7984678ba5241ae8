"""The nemesis's PostgreSQL wire-protocol followers (tests/nemesis/pg.py) on hand-built
byte streams, cut at every possible place: the same statements, marks and bytes."""

from __future__ import annotations

import random
import struct

import pytest

from tests.nemesis.pg import (
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    SSL_REQUEST,
    Backend,
    CommitFault,
    Frontend,
    Mark,
    is_commit,
)
from tests.nemesis.proxy import ProtocolViolation


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", 4 + len(body)) + body


def _startup(user: bytes = b"postgres") -> bytes:
    params = b"user\0" + user + b"\0\0"
    return struct.pack("!ii", 8 + len(params), 196608) + params


def _splits(stream: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut in two at every position."""
    cuts = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    cuts += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return cuts


CLIENT = (
    struct.pack("!ii", 8, GSSENC_REQUEST)
    + struct.pack("!ii", 8, SSL_REQUEST)
    + _startup()
    + _msg(b"Q", b"BEGIN\0")
    + _msg(b"Q", b"INSERT INTO t VALUES ('" + b"x" * 500 + b"')\0")
    + _msg(b"Q", b"COMMIT\0")
    + _msg(b"P", b"s1\0  commit\0\0\0")
    + _msg(b"B", b"\0s1\0\0\0\0\0\0\0")
    + _msg(b"E", b"\0\0\0\0\0")
    + _msg(b"S", b"")
    + _msg(b"X", b"")
)
CLIENT_STATEMENTS = [
    ("Q", "BEGIN"),
    ("Q", "INSERT INTO t VALUES ('" + "x" * 177),
    ("Q", "COMMIT"),
    ("P", "  commit"),
]


def _follow(chunks: list[bytes]) -> tuple[int, list[tuple[str, str]]]:
    """How many encryption requests and which statements a Frontend finds in ``chunks``."""
    requests: list[None] = []
    statements: list[tuple[str, str]] = []
    front = Frontend(lambda: requests.append(None), lambda k, s: statements.append((k, s)))
    for chunk in chunks:
        front.feed(chunk)
    return len(requests), statements


def test_frontend_finds_statements_and_encryption_requests() -> None:
    for chunks in _splits(CLIENT):
        assert _follow(chunks) == (2, CLIENT_STATEMENTS), chunks


def test_frontend_refuses_tls_and_garbage() -> None:
    client_hello = bytes.fromhex("160301020001") + b"\0" * 16
    with pytest.raises(ProtocolViolation, match="not a PostgreSQL startup packet"):
        Frontend(lambda: None, lambda k, s: None).feed(client_hello)
    with pytest.raises(ProtocolViolation, match="unknown startup packet code"):
        Frontend(lambda: None, lambda k, s: None).feed(struct.pack("!ii", 8, 12345))
    front = Frontend(lambda: None, lambda k, s: None)
    front.feed(_startup())
    with pytest.raises(ProtocolViolation, match="length 2"):
        front.feed(b"Q" + struct.pack("!i", 2))


def test_frontend_ignores_what_follows_a_cancel_request() -> None:
    statements: list[tuple[str, str]] = []
    front = Frontend(lambda: None, lambda k, s: statements.append((k, s)))
    front.feed(struct.pack("!iiii", 16, CANCEL_REQUEST, 1, 2) + b"anything at all")
    assert statements == []


SERVER = (
    b"N"
    + b"N"
    + _msg(b"R", b"\0\0\0\0")
    + _msg(b"S", b"server_version\x0015\0")
    + _msg(b"Z", b"I")
    + _msg(b"C", b"BEGIN\0")
    + _msg(b"Z", b"T")
    + _msg(b"D", b"\0\1" + struct.pack("!i", 300) + b"y" * 300)
    + _msg(b"C", b"SELECT 1\0")
    + _msg(b"Z", b"T")
    + _msg(b"C", b"COMMIT\0")
    + _msg(b"Z", b"I")
)


def test_backend_cuts_at_commit_and_ready_and_loses_nothing() -> None:
    expected = [
        (Mark.READY, _msg(b"Z", b"I")),
        (Mark.READY, _msg(b"Z", b"T")),
        (Mark.READY, _msg(b"Z", b"T")),
        (Mark.COMMIT, _msg(b"C", b"COMMIT\0")),
        (Mark.READY, _msg(b"Z", b"I")),
    ]
    for chunks in _splits(SERVER):
        back = Backend()
        back.expect_encryption_answer()
        back.expect_encryption_answer()
        pieces = [piece for chunk in chunks for piece in back.feed(chunk)]
        assert b"".join(p.data for p in pieces) == SERVER, chunks
        assert [(p.mark, p.data) for p in pieces if p.mark] == expected, chunks


def test_backend_holds_only_an_incomplete_small_message() -> None:
    back = Backend()
    big = _msg(b"D", b"z" * 1000)
    assert b"".join(p.data for p in back.feed(big[:600])) == big[:600], "rows pass at once"
    commit = _msg(b"C", b"COMMIT\0")
    held = back.feed(big[600:] + commit[:7])
    assert b"".join(p.data for p in held) == big[600:], "a partial CommandComplete is held"
    rest = back.feed(commit[7:])
    assert [(p.mark, p.data) for p in rest] == [(Mark.COMMIT, commit)]


def test_backend_refuses_encryption_and_reads_an_old_servers_error() -> None:
    back = Backend()
    back.expect_encryption_answer()
    with pytest.raises(ProtocolViolation, match="agreed to encryption"):
        back.feed(b"S")
    old = Backend()
    old.expect_encryption_answer()
    error = _msg(b"E", b"SFATAL\0Munsupported frontend protocol\0\0")
    assert b"".join(p.data for p in old.feed(error)) == error


def test_is_commit() -> None:
    assert is_commit("COMMIT") and is_commit("  commit;") and is_commit("END")
    assert not is_commit("COMMITTED") and not is_commit("SELECT 'COMMIT'")


def test_commit_fault_counts_down_or_draws_from_its_seed() -> None:
    fault = CommitFault()
    assert not fault.draw()
    fault.set(None, None, None)
    assert [fault.draw() for _ in range(3)] == [True, False, False]
    fault.set(2, None, None)
    assert [fault.draw() for _ in range(3)] == [True, True, False]
    fault.set(None, 0.3, 11)
    rng = random.Random(11)
    assert [fault.draw() for _ in range(50)] == [rng.random() < 0.3 for _ in range(50)]
    with pytest.raises(ValueError, match="not both"):
        fault.set(1, 0.5, None)
    with pytest.raises(ValueError, match="within"):
        fault.set(None, 1.5, None)
    with pytest.raises(ValueError, match=">= 0"):
        fault.set(-1, None, None)
