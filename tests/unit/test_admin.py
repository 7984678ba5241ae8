"""The admin API's pure parts: its config section, its OpenAPI document (valid, and naming
every route the app serves under /api/v1/), the charts' history and the console's escaping.
The API served by a real run is tests/integration/test_admin_api.py's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from connector.admin.app import build_admin_app, session_value
from connector.admin.console import lineage_page
from connector.admin.history import History, quantile, sparkline
from connector.admin.openapi import API_PREFIX, openapi_document
from connector.admin.source import AdminError, AdminSource, page_bounds
from connector.config import ConfigFileError, load_config
from connector.metrics.core import Health, Histogram, Snapshot


def _config(tmp_path: Path, admin: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        "kafka: {bootstrap_servers: 127.0.0.1:9}\n"
        f"checkpoint: {{backend: sqlite, path: {tmp_path / 'c.db'}}}\n"
        "namespaces: {shop: {}}\n"
        f"admin: {admin}\n"
    )
    return path


def test_an_admin_section_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as info:
        load_config(_config(tmp_path, "{host: 0.0.0.0, port: 0}"), env={})
    assert "admin.token" in str(info.value) and "beyond loopback" in str(info.value)


def test_the_admin_token_may_come_from_a_file_and_stays_secret(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("t0ken\n")
    cfg = load_config(_config(tmp_path, '{host: 0.0.0.0, token: "${file:tok}"}'), env={})
    assert cfg.admin is not None and cfg.admin.token is not None
    assert cfg.admin.token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(cfg.admin) and "t0ken" in cfg.secrets()
    loopback = load_config(_config(tmp_path, "{}"), env={})
    assert loopback.admin is not None
    assert (loopback.admin.host, loopback.admin.port, loopback.admin.token) == (
        "127.0.0.1",
        8081,
        None,
    )


def _source(tmp_path: Path) -> AdminSource:
    cfg = load_config(_config(tmp_path, "{}"), env={})
    return AdminSource(cfg, None, Snapshot, lambda: Health({}), "i-1")  # type: ignore[arg-type]


def test_the_openapi_document_is_valid_and_documents_every_api_route(tmp_path: Path) -> None:
    document = openapi_document()
    validate(document)  # raises on an invalid document
    app = build_admin_app(_source(tmp_path), token="t")
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path.startswith(API_PREFIX):
            served.update((route.path, m.lower()) for m in route.methods or () if m != "HEAD")
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert served == documented
    # Each documented path parameter is a parameter of its operation.
    for path, ops in document["paths"].items():
        for op in ops.values():
            named = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert named == set(re.findall(r"{(\w+)}", path)), path


def test_the_console_session_is_a_keyed_hash_not_the_token() -> None:
    assert session_value("abc") != "abc" and len(session_value("abc")) == 64
    assert session_value("abc") == session_value("abc") != session_value("abd")


@pytest.mark.parametrize(
    ("offset", "limit", "ok"),
    [(None, None, (0, 50)), ("10", "5", (10, 5)), ("-1", None, None), (None, "0", None),
     (None, "501", None), ("x", None, None)],
)  # fmt: skip
def test_page_bounds(offset: str | None, limit: str | None, ok: tuple[int, int] | None) -> None:
    if ok is None:
        with pytest.raises(AdminError) as info:
            page_bounds(offset, limit)
        assert info.value.status == 422
    else:
        assert page_bounds(offset, limit) == ok


def test_quantile_reads_the_bucket_that_holds_it() -> None:
    bounds = (0.01, 0.1, 1.0)
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [9, 1, 0, 0], 0.5) == 0.01
    assert quantile(bounds, [9, 1, 0, 0], 0.95) == 0.1
    assert quantile(bounds, [0, 0, 0, 3], 0.5) == 1.0  # +Inf reads as the largest bound


class _Numbers:
    """Counters a test moves between samples."""

    def __init__(self) -> None:
        self.snap = Snapshot(delivery_seconds=Histogram((0.01, 0.1, 1.0)))

    def __call__(self) -> Snapshot:
        histogram = self.snap.delivery_seconds
        assert histogram is not None
        copy = Histogram(histogram.buckets)
        copy.counts, copy.sum = list(histogram.counts), histogram.sum
        return Snapshot(
            values=dict(self.snap.values),
            delivered_by_target=dict(self.snap.delivered_by_target),
            failed_by_target=dict(self.snap.failed_by_target),
            dead_by_target=dict(self.snap.dead_by_target),
            delivery_seconds=copy,
        )


def test_history_turns_samples_into_rates_latencies_and_target_health() -> None:
    numbers = _Numbers()
    now = [1000.0]
    history = History(numbers, interval=5, size=3, clock=lambda: now[0])
    history.sample()
    assert history.target_health("hook") == "unknown"
    numbers.snap.values.update(records=50, actions_delivered=10)
    numbers.snap.delivered_by_target.update(hook=10)
    assert numbers.snap.delivery_seconds is not None
    numbers.snap.delivery_seconds.observe(0.05, 10)
    now[0] += 5
    history.sample()
    series: dict[str, Any] = history.series()
    assert series["records_per_second"] == [10.0]
    assert series["delivered_per_second"] == [2.0]
    assert series["delivery_p50_ms"] == [100.0] and series["delivery_p95_ms"] == [100.0]
    assert history.target_health("hook") == "ok"
    numbers.snap.failed_by_target.update(hook=2)
    now[0] += 5
    history.sample()
    assert series != history.series()
    assert history.series()["delivery_p50_ms"][-1] is None  # nothing delivered then
    assert history.target_health("hook") == "degraded"  # the minute holds deliveries too
    assert history.target_health("hook", window=5) == "failing"  # the last interval: none
    numbers.snap.delivered_by_target.update(hook=11)
    numbers.snap.dead_by_target.update(hook=1)
    for _ in range(3):  # the ring keeps 3 intervals: the oldest samples go
        now[0] += 5
        history.sample()
    assert len(history.series()["at"]) == 3
    assert history.target_health("hook", window=12) == "ok"


def test_a_sparkline_is_inline_svg_with_its_last_value_and_escaped_label() -> None:
    svg = sparkline([1.0, None, 3.0], label="<p50>", unit=" ms")
    assert svg.count("<svg") == 1 and "<polyline" in svg
    assert "&lt;p50&gt;" in svg and "<p50>" not in svg
    assert "<b>3 ms</b>" in svg
    assert "<polyline" not in sparkline([], label="empty")


def test_the_lineage_page_escapes_what_it_echoes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector.ops import trace

    monkeypatch.setattr(trace, "trace", lambda store, query, **options: [])
    page = lineage_page(_source(tmp_path), {"by": "key", "q": '"><script>x</script>'})
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;" in page and "Nothing found." in page


class _Trace:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def to_dict(self) -> dict[str, Any]:
        return self._data


def test_lineage_calls_trace_with_the_one_query_and_renders_its_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query and the rendering around connector.ops.trace (its search is replaced
    here: the real one runs in the integration and browser tests)."""
    from connector.ops import trace as trace_module
    from connector.ops.trace import TraceQuery

    calls: list[tuple[object, TraceQuery, int]] = []
    found = {
        "event": {"event_id": "e-1", "topic": "t", "partition": 0, "offset": 7, "key": "k"},
        "actions": [
            {"action_id": "a-1", "rule": "orders", "kind": "notify", "target": "audit",
             "state": "done", "settled_by": 1.5, "last_error": None, "engine_ref": None,
             "attempts": [{"n": 1, "at": 1.0, "target": "audit", "outcome": "failed",
                           "detail": "HTTP 503"},
                          {"n": 2, "at": 1.5, "target": "audit", "outcome": "delivered",
                           "detail": None}]},
        ],
    }  # fmt: skip

    def trace(store: object, query: TraceQuery, *, limit: int = 50, **_: Any) -> list[_Trace]:
        calls.append((store, query, limit))
        return [_Trace(found)]

    monkeypatch.setattr(trace_module, "trace", trace)
    source = _source(tmp_path)
    body = source.lineage({"coordinates": "t/0/7", "ignored": "x"}, 5)
    assert body["traces"] == [found]
    assert calls == [(None, TraceQuery(event_id="t/0/7"), 5)]  # coordinates: an event id
    source.lineage({"key": "k", "namespace": "shop"}, 5)
    assert calls[-1][1] == TraceQuery(key="k", namespace="shop")
    for wrong in ({}, {"key": "k", "context": "c"}, {"namespace": "shop"}):
        with pytest.raises(AdminError) as info:
            source.lineage(wrong, 5)
        assert info.value.status == 400
    page = lineage_page(source, {"by": "coordinates", "q": "t/0/7"})
    assert "<code>e-1</code>" in page and "<code>a-1</code>" in page
    assert "HTTP 503" in page and "delivered" in page and "audit" in page and "t/0/7" in page


def test_a_reload_result_becomes_json() -> None:
    from dataclasses import dataclass

    from connector.admin.source import result_dict

    @dataclass(frozen=True)
    class Result:
        rules_version: int
        rules_added: tuple[str, ...] = ()

        def summary(self) -> str:
            return f"rules added: {', '.join(self.rules_added)}"

    assert result_dict(Result(2, ("r",))) == {
        "rules_version": 2,
        "rules_added": ["r"],
        "summary": "rules added: r",
    }
    assert result_dict(_Trace({"a": 1})) == {"a": 1}  # a to_dict() of its own wins
