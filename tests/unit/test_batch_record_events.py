"""A batch record's events read back as they were written: text and binary values,
headers, explicit ids and the ids the Kafka coordinates make, empty fields, and text
orjson cannot write (a lone surrogate: json writes the batch)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpoint.records import decode_events, encode_events
from kec.event import Event


def _event(i: int, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "key": f"k{i}", "value": f'{{"n": {i}}}', "namespace": "ns",
        "create_time": 1_700_000_000_000 + i, "topic": "t", "partition": 3, "offset": i,
    }  # fmt: skip
    base.update(fields)
    return Event(**base)


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"value": b"\x00\xffbinary"},
        {"headers": (("trace", b"\x01\x02"), ("empty", b""))},
        {"event_id": "my-own-id", "sender": "svc", "context": "wf-1", "event_type": "t"},
        {"value": "caf\u00e9 \ud800"},  # a lone surrogate: json writes the batch
        {"key": "k\u2603", "value": ""},
    ],
)
def test_events_read_back_as_written(odd: dict[str, Any]) -> None:
    events = [_event(0), _event(1, **odd), _event(2)]
    back = decode_events(encode_events(events), "t", 3)
    assert back == events
    assert [(e.event_id, e.explicit_id) for e in back] == [
        (e.event_id, e.explicit_id) for e in events
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=8),
            st.one_of(st.text(max_size=20), st.binary(max_size=8)),
            st.lists(st.tuples(st.text(max_size=4), st.binary(max_size=4)), max_size=2),
            st.one_of(st.none(), st.text(min_size=1, max_size=6)),
        ),
        max_size=6,
    )
)
def test_any_batch_of_events_reads_back(rows: list[tuple[str, Any, Any, str | None]]) -> None:
    events = [
        _event(i, key=k, value=v, headers=tuple(h), event_id=eid or "")
        for i, (k, v, h, eid) in enumerate(rows)
    ]
    assert decode_events(encode_events(events), "t", 3) == events
