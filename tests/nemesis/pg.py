"""The PostgreSQL-aware proxy: lost COMMIT acknowledgements.

:class:`PgProxy` follows PostgreSQL's wire protocol (version 3) in both directions, enough
to find message boundaries: the client's untyped startup packets (SSLRequest,
GSSENCRequest, CancelRequest, StartupMessage), then typed messages (1-byte type, int32
length counting itself); the server's one-byte answer to an encryption request, then
typed messages. Nothing is rewritten.

The fault: when the server answers a COMMIT (CommandComplete with the tag ``COMMIT``,
whether the client sent it as a simple Query, through Parse/Bind/Execute, as ``END`` or
inside a multi-statement query) and the proxy decides to swallow it, the answer is held
back; once the server's ReadyForQuery has arrived too (or :data:`ACK_WAIT` seconds
passed), the connection is reset. The server has committed; the client saw its
connection drop. :meth:`PgProxy.swallow_commit_acks` says which answers to swallow.

The proxy handles plaintext connections only. An encryption request is forwarded and the
server's ``N`` passed on; a server that agrees to TLS or GSS encryption, or a client
starting TLS directly, gets its connection reset (libpq's ``sslmode=prefer`` then retries
in plaintext; ``sslmode=disable`` avoids the round trip).
"""

from __future__ import annotations

import asyncio
import enum
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from psycopg.conninfo import make_conninfo

from tests.nemesis.proxy import Address, Conn, ProtocolViolation, Proxy, Session

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10_000  # the server's own limit on a startup packet
MAX_SMALL = 1 << 20  # a CommandComplete or ReadyForQuery larger than this is not one
SQL_HEAD = 200  # how much of a statement's text is kept to classify and record it
ACK_WAIT = 2.0  # seconds a swallowed COMMIT's answer waits for its ReadyForQuery
_COMMIT = re.compile(r"\s*(COMMIT|END)\b", re.IGNORECASE)


def is_commit(sql: str) -> bool:
    """Whether a statement's text starts a COMMIT (or its synonym END)."""
    return _COMMIT.match(sql) is not None


def _int32(buf: bytes | bytearray, at: int) -> int:
    return int.from_bytes(buf[at : at + 4], "big", signed=True)


class Frontend:
    """Follows the client's bytes. Calls ``on_encryption_request()`` when the client asks
    for TLS or GSS encryption (the server answers with one untyped byte) and
    ``on_statement(kind, sql)`` for each Query (``"Q"``) and Parse (``"P"``), with the
    first :data:`SQL_HEAD` characters of its text. Raises :class:`ProtocolViolation` on
    bytes that are not the protocol (TLS among them)."""

    def __init__(
        self,
        on_encryption_request: Callable[[], None],
        on_statement: Callable[[str, str], None],
    ) -> None:
        self._on_encryption_request = on_encryption_request
        self._on_statement = on_statement
        self._buf = bytearray()
        self._skip = 0
        self._phase = "startup"  # then "typed", or "cancel" (the server just closes)

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            if self._skip:
                step = min(self._skip, len(buf))
                del buf[:step]
                self._skip -= step
                if self._skip:
                    return
            if self._phase == "cancel":
                buf.clear()
                return
            if self._phase == "startup":
                if not self._startup_packet():
                    return
                continue
            if len(buf) < 5:
                return
            kind, length = chr(buf[0]), _int32(buf, 1)
            if length < 4:
                raise ProtocolViolation(f"client message {kind!r} with length {length}")
            total = 1 + length
            if kind in "QP":
                keep = min(total, 5 + 2 * SQL_HEAD)  # the name, then the text, for Parse
                if len(buf) < keep:
                    return
                self._statement(kind, bytes(buf[5:keep]))
                del buf[:keep]
                self._skip = total - keep
            else:
                step = min(total, len(buf))
                del buf[:step]
                self._skip = total - step

    def _startup_packet(self) -> bool:
        buf = self._buf
        if len(buf) < 8:
            return False
        length, code = _int32(buf, 0), _int32(buf, 4)
        if not 8 <= length <= MAX_STARTUP:
            raise ProtocolViolation(
                f"client sent {bytes(buf[:8])!r}..., not a PostgreSQL startup packet "
                "(TLS without SSLRequest? the nemesis proxy handles plaintext only)"
            )
        if len(buf) < length:
            return False
        del buf[:length]
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            self._on_encryption_request()
        elif code == CANCEL_REQUEST:
            self._phase = "cancel"
        elif code >> 16 == 3:
            self._phase = "typed"
        else:
            raise ProtocolViolation(f"unknown startup packet code {code}")
        return True

    def _statement(self, kind: str, body: bytes) -> None:
        if kind == "P":  # statement name, NUL, query text, NUL, ...
            body = body.split(b"\0", 1)[1] if b"\0" in body else b""
        sql = body.split(b"\0", 1)[0].decode("utf-8", "replace")[:SQL_HEAD]
        self._on_statement(kind, sql)


class Mark(enum.Enum):
    """What a piece of the server's bytes is, when it matters."""

    COMMIT = "CommandComplete COMMIT"
    READY = "ReadyForQuery"


@dataclass(frozen=True)
class Piece:
    data: bytes
    mark: Mark | None = None


class Backend:
    """Follows the server's bytes and cuts them into pieces at the messages that matter.

    :meth:`feed` returns pieces whose concatenation is every byte fed so far except a
    held-back tail: an incomplete message header, or an incomplete CommandComplete or
    ReadyForQuery (small messages; everything else passes through at once). A complete
    CommandComplete ``COMMIT`` and each ReadyForQuery are pieces of their own, marked.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0
        self._answers_due = 0  # one-byte answers to encryption requests

    def expect_encryption_answer(self) -> None:
        self._answers_due += 1

    def feed(self, data: bytes) -> list[Piece]:
        buf = self._buf
        buf += data
        pieces: list[Piece] = []
        plain = bytearray()

        def cut(piece: Piece) -> None:
            if plain:
                pieces.append(Piece(bytes(plain)))
                plain.clear()
            pieces.append(piece)

        while True:
            if self._skip:
                step = min(self._skip, len(buf))
                plain += buf[:step]
                del buf[:step]
                self._skip -= step
                if self._skip:
                    break
            if self._answers_due:
                if not buf:
                    break
                if buf[0] == ord("N"):
                    plain.append(buf.pop(0))
                    self._answers_due -= 1
                    continue
                if buf[0] != ord("E"):  # an ErrorResponse (old server) is a typed message
                    raise ProtocolViolation(
                        f"the server agreed to encryption ({chr(buf[0])!r}): the nemesis "
                        "proxy handles plaintext only"
                    )
                self._answers_due = 0
            if len(buf) < 5:
                break
            kind, length = buf[0], _int32(buf, 1)
            if length < 4:
                raise ProtocolViolation(f"server message {chr(kind)!r} with length {length}")
            total = 1 + length
            if kind in b"CZ":
                if total > MAX_SMALL:
                    raise ProtocolViolation(f"server message {chr(kind)!r} of {total} bytes")
                if len(buf) < total:
                    break
                message = bytes(buf[:total])
                del buf[:total]
                if kind == ord("Z"):
                    cut(Piece(message, Mark.READY))
                elif message[5:-1] == b"COMMIT":
                    cut(Piece(message, Mark.COMMIT))
                else:
                    plain += message
            else:
                step = min(total, len(buf))
                plain += buf[:step]
                del buf[:step]
                self._skip = total - step
        if plain:
            pieces.append(Piece(bytes(plain)))
        return pieces


class CommitFault:
    """Which COMMIT answers to swallow: the next ``n``, or each with a probability drawn
    from a seeded :class:`random.Random` (reproducible for a given order of answers)."""

    def __init__(self) -> None:
        self.remaining = 0
        self.probability = 0.0
        self._rng = random.Random()

    def set(self, n: int | None, probability: float | None, seed: int | None) -> None:
        if n is not None and probability is not None:
            raise ValueError("swallow_commit_acks takes n or probability, not both")
        if probability is None:
            count = 1 if n is None else n
            if not isinstance(count, int) or count < 0:
                raise ValueError(f"n must be a whole number >= 0, not {count!r}")
            self.remaining, self.probability = count, 0.0
            return
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], not {probability!r}")
        self.remaining, self.probability = 0, float(probability)
        self._rng = random.Random(seed)

    def draw(self) -> bool:
        if self.remaining:
            self.remaining -= 1
            return True
        return self.probability > 0.0 and self._rng.random() < self.probability


class PgSession(Session):
    """One PostgreSQL connection: follows both directions, withholds a swallowed COMMIT
    answer and everything after it, resets once its ReadyForQuery has arrived."""

    def __init__(self, proxy: PgProxy, conn: Conn) -> None:
        self._proxy = proxy
        self._conn = conn
        self._back = Backend()
        self._front = Frontend(self._encryption_requested, proxy._record)
        self._swallowing = False

    def _encryption_requested(self) -> None:
        self._back.expect_encryption_answer()
        self._proxy._encryption_requests += 1

    def from_client(self, data: bytes) -> tuple[bytes, bool]:
        self._front.feed(data)
        return data, False

    def from_server(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for piece in self._back.feed(data):
            if self._swallowing:
                if piece.mark is Mark.READY:
                    return bytes(out), True
                continue
            if piece.mark is Mark.COMMIT and self._proxy._swallow_this():
                self._swallowing = True
                # The commit is done; if no ReadyForQuery follows soon (a pipeline not
                # yet synced), reset anyway.
                asyncio.get_running_loop().call_later(ACK_WAIT, self._conn.reset)
                continue
            out += piece.data
        return bytes(out), False


class PgProxy(Proxy):
    """A :class:`~tests.nemesis.proxy.Proxy` in front of PostgreSQL that can swallow
    COMMIT acknowledgements (see the module docstring).

    :meth:`stats` adds ``encryption_requests``, ``commit_requests`` (Query and Parse
    messages whose text starts with COMMIT or END), ``commit_acks`` (the server's
    CommandComplete COMMIT answers, however asked for), ``swallowed``, and the fault's
    settings ``swallow_next`` and ``swallow_probability``.
    """

    def __init__(self, upstream: Address, *, listen: Address = ("127.0.0.1", 0)) -> None:
        super().__init__(upstream, listen=listen)
        self._fault = CommitFault()
        self._swallowed = 0
        self._encryption_requests = 0
        self._commit_requests = 0
        self._commit_acks = 0
        self._statements: deque[tuple[str, str]] = deque(maxlen=1000)

    def swallow_commit_acks(
        self, n: int | None = None, *, probability: float | None = None, seed: int | None = None
    ) -> None:
        """Swallow the next ``n`` COMMIT answers (default 1; 0 stops), or each one with
        ``probability`` drawn from ``random.Random(seed)``, until changed or healed."""
        self._call(lambda: self._fault.set(n, probability, seed))

    @property
    def swallowed(self) -> int:
        """How many COMMIT answers were swallowed so far."""
        return self._call(lambda: self._swallowed)

    def statements(self) -> list[tuple[str, str]]:
        """The last 1000 statements clients sent: ``("Q", sql)`` for a simple Query,
        ``("P", sql)`` for a Parse, each text cut at 200 characters."""
        return self._call(lambda: list(self._statements))

    def dsn(self, dsn: str, **extra: Any) -> str:
        """``dsn`` (URL or key=value) pointed at this proxy, plus ``extra`` parameters; a
        URL stays a URL (a checkpoint store URL must keep its scheme)."""
        if "://" not in dsn:
            return make_conninfo(dsn, host="127.0.0.1", port=str(self.port), **extra)
        url = urlsplit(dsn)
        user = url.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        query = "&".join(filter(None, [url.query, urlencode(extra)]))
        return urlunsplit((url.scheme, netloc, url.path, query, url.fragment))

    def session(self, conn: Conn) -> Session:
        return PgSession(self, conn)

    def _record(self, kind: str, sql: str) -> None:
        self._statements.append((kind, sql))
        self._commit_requests += is_commit(sql)

    def _swallow_this(self) -> bool:
        self._commit_acks += 1
        if self._fault.draw():
            self._swallowed += 1
            return True
        return False

    def _heal_more(self) -> None:
        self._fault.set(0, None, None)

    def _stats(self) -> dict[str, Any]:
        return {
            **super()._stats(),
            "encryption_requests": self._encryption_requests,
            "commit_requests": self._commit_requests,
            "commit_acks": self._commit_acks,
            "swallowed": self._swallowed,
            "swallow_next": self._fault.remaining,
            "swallow_probability": self._fault.probability,
        }
