"""The ``log`` target: one JSON line per action, to stdout or appended to a file.

The embedded default. Each line carries ``idempotency_key`` (the action id); a batch is
written with one ``write`` on an ``O_APPEND`` descriptor. A process killed in the middle of
a large write can still leave a torn last line; opening the file cuts it off (its actions
were not marked done, so they are delivered again), which keeps every line valid JSON.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from connector.targets.base import Target
from kec.action import Action
from kec.errors import TargetError
from kec.jsontext import dumps

log = logging.getLogger(__name__)


def action_line(action: Action, delivered_at: float | None = None) -> str:
    """The action as one JSON line: :meth:`Action.to_dict`'s fields, its
    ``idempotency_key`` and ``delivered_at`` (epoch seconds; now if not given)."""
    return _line(action, round(time.time(), 6) if delivered_at is None else delivered_at).decode()


def _line(action: Action, delivered_at: float) -> bytes:
    """:func:`action_line` as bytes, the payload's part from :meth:`Action.payload_json`
    (written once per action, most often already by the batch record)."""
    a = action
    body: dict[str, Any] = {
        "rule": a.rule,
        "kind": a.kind._value_,  # not .value: an Enum property, ~10x the cost
        "target": a.target,
        "namespace": a.namespace,
        "event_ids": a.event_ids,
        "event_key": a.event_key,
        "workflow": a.workflow,
        "task": a.task,
        "context": a.context,
        "payload": orjson.Fragment(a.payload_json()),
        "action_id": a.action_id,
        "idempotency_key": a.action_id,
        "delivered_at": delivered_at,
    }
    try:
        # Floats: the payload's were checked by payload_json, delivered_at is finite.
        return orjson.dumps(body, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:  # a lone surrogate in a name, say: json writes it
        body["payload"] = a.payload
        return (dumps(body, floats_in=(a.payload,)) + "\n").encode()


class LogTarget(Target):
    # One write per call, in order: a call may hold several actions of one lane.
    batch_size = 2000
    ordered = True

    def __init__(self, name: str = "log", path: Path | None = None, *, fsync: bool = False):
        self.name = name
        self._path = path
        self._fsync = fsync
        self._fd: int | None = None

    def open(self) -> None:
        if self._fd is not None:
            return
        if self._path is None:
            self._fd = sys.stdout.fileno()
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self._cut_torn_tail(self._fd)
        except OSError as exc:
            raise TargetError(f"log target {self.name}: cannot open {self._path}: {exc}") from exc

    def _cut_torn_tail(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        # Scan back in blocks for the last newline; everything after it is a torn line.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            block = os.pread(fd, end - start, start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        os.ftruncate(fd, keep)
        log.warning(
            "log target %s: cut a torn last line (%d bytes) left by a crash in %s",
            self.name,
            size - keep,
            self._path,
        )

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and self._path is not None:
            os.close(fd)

    def deliver(self, action: Action) -> None:
        self._write(_line(action, round(time.time(), 6)))

    def deliver_many(self, actions: Sequence[Action]) -> dict[str, BaseException]:
        try:
            now = round(time.time(), 6)  # one call's lines are written at once
            # Appended as each is written, not joined from a list: orjson hands each
            # line over in a buffer of 4 KiB or more, and 2,000 of them held at once
            # cost 2.4 us a line in allocation against 0.95 us appended (measured).
            lines = bytearray()
            for a in actions:
                lines += _line(a, now)
            self._write(lines)
        except TargetError as exc:
            return {a.action_id: exc for a in actions}
        return {}

    def _write(self, data: bytes | bytearray) -> None:
        if self._fd is None:
            raise TargetError(f"log target {self.name} is not open")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self._fsync and self._path is not None:
                os.fsync(self._fd)
        except OSError as exc:
            raise TargetError(f"log target {self.name}: write failed: {exc}") from exc
