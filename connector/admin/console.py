"""The web console's pages, rendered here as HTML (no template engine, no build step).

Every page links ``/static/console.css`` and ``/static/console.js`` (package data of
:mod:`connector.admin`); the script refreshes the overview's live part (``/live``, a
fragment rendered by :func:`live_fragment`) every few seconds and sends the buttons'
POSTs to the API with the console's header. Every value shown is escaped.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

from connector.admin.history import sparkline
from connector.admin.openapi import API_PREFIX
from connector.admin.source import LINEAGE_KEYS, AdminError, AdminSource, page_bounds

__all__ = [
    "dead_letters_page",
    "error_page",
    "lineage_page",
    "live_fragment",
    "login_page",
    "overview_page",
    "rules_page",
]

_NAV = (("/", "Overview"), ("/lineage", "Lineage"), ("/dead-letters", "Dead letters"),
        ("/rules", "Rules"))  # fmt: skip


def _e(value: Any) -> str:
    return html.escape("–" if value is None else str(value))


def _layout(
    title: str, body: str, *, active: str = "", nav: bool = True, logout: bool = True
) -> str:
    links = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{name}</a>'
        for href, name in _NAV
    )
    out = (
        '<form method="post" action="/logout" class="logout"><button type="submit">Log out'
        "</button></form>"
        if logout
        else ""
    )
    header = f"<nav>{links}{out}</nav>" if nav else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · event-connector</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head><body>'
        f'<header><b class="brand">event-connector</b>{header}</header>'
        f'<p id="flash" role="status"></p><main><h1>{_e(title)}</h1>{body}</main></body></html>'
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, id_: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    ident = f' id="{id_}"' if id_ else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _button(path: str, label: str, *, confirm: str = "") -> str:
    ask = f' data-confirm="{_e(confirm)}"' if confirm else ""
    return f'<button type="button" data-post="{_e(path)}"{ask}>{_e(label)}</button>'


def _badge(text: str, good: bool | None) -> str:
    kind = "ok" if good else ("bad" if good is False else "idle")
    return f'<span class="badge {kind}">{_e(text)}</span>'


def login_page(problem: str = "") -> str:
    note = f'<p class="problem">{_e(problem)}</p>' if problem else ""
    form = (
        f'{note}<form method="post" action="/login" class="login">'
        '<label>Admin token <input type="password" name="token" autocomplete="current-password"'
        " required autofocus></label><button type=submit>Log in</button></form>"
    )
    return _layout("Log in", form, nav=False)


def error_page(status: int, detail: str) -> str:
    return _layout(f"Error {status}", f'<p class="problem">{_e(detail)}</p>')


# -- the overview ------------------------------------------------------------------------


def overview_page(source: AdminSource) -> str:
    live = f'<div id="live" data-refresh="/live">{live_fragment(source)}</div>'
    button = _button(f"{API_PREFIX}/reload", "Reload config", confirm="Reload the config file?")
    reload = f'<p class="actions">{button}</p>'
    return _layout("Overview", live + reload, active="/", logout=source.secured)


def live_fragment(source: AdminSource) -> str:
    """The part of the overview the script refreshes: status, charts, partitions, targets."""
    status = source.status()
    checks = " ".join(_badge(name, ok) for name, ok in status["checks"].items())
    facts = (
        f'<p class="facts">{_badge(status["status"], status["ready"])} {checks}'
        f"<br>instance <b>{_e(status['instance'])}</b> · group <b>{_e(status['group_id'])}</b>"
        f" · version {_e(status['version'])} · outbox {_e(status['outbox']['pending'])}"
        f" pending, {_e(status['outbox']['dead'])} dead</p>"
    )
    series = source.history_series()
    charts = "".join(
        sparkline(series[key], label=label, unit=unit)
        for key, label, unit in (
            ("records_per_second", "records/s", ""),
            ("delivered_per_second", "deliveries/s", ""),
            ("delivery_p50_ms", "delivery p50", " ms"),
            ("delivery_p95_ms", "delivery p95", " ms"),
        )
    )
    span = len(series["at"]) * series["interval_seconds"]
    shown = f"{span / 60:.0f} min" if span >= 60 else f"{span:.0f} s"
    charts = (
        f'<section class="charts"><h2>Last {shown} (every '
        f"{series['interval_seconds']:g} s)</h2>{charts}</section>"
    )
    partitions = _table(
        ("topic", "partition", "owner", "epoch", "next offset", "lag", "state"),
        (
            (
                _e(p["topic"]),
                _e(p["partition"]),
                _e(p["owner"]),
                _e(p["epoch"]),
                _e(p["next_offset"]),
                _e(p["lag"]),
                _badge("stopped", False) if p["stopped"] else _badge("running", True),
            )
            for p in source.partitions()
        ),
        id_="partitions",
    )
    targets = _table(
        ("target", "type", "health", "delivered", "failed", "dead", ""),
        (
            (
                _e(t["name"]),
                _e(t["type"]),
                _badge(t["health"], {"ok": True, "unknown": None}.get(t["health"], False)),
                _e(t["delivered"]),
                _e(t["failed"]),
                _e(t["dead"]),
                _pause_button("targets", t["name"], t["paused"]),
            )
            for t in source.targets()
        ),
        id_="targets",
    )
    return f"{facts}{charts}<h2>Partitions</h2>{partitions}<h2>Targets</h2>{targets}"


def _pause_button(kind: str, name: str, paused: bool) -> str:
    verb = "resume" if paused else "pause"
    return _button(f"{API_PREFIX}/{kind}/{quote(name, safe='')}/{verb}", verb.title())


# -- rules -------------------------------------------------------------------------------


def rules_page(source: AdminSource) -> str:
    table = _table(
        ("rule", "namespace", "action", "target", "fired (all time)", "fired (this run)", ""),
        (
            (
                _e(r["name"]) + ("" if r["configured"] else " <i>(not configured)</i>"),
                _e(r["namespace"]),
                _e(r["action"]),
                _e(r["target"]),
                _e(r["fired"]),
                _e(r["fired_this_run"]),
                _pause_button("rules", r["name"], r["paused"]) if r["configured"] else "",
            )
            for r in source.rules()
        ),
        id_="rules",
    )
    return _layout("Rules", table, active="/rules", logout=source.secured)


# -- dead letters ------------------------------------------------------------------------


def dead_letters_page(source: AdminSource, query: Mapping[str, str]) -> str:
    offset, limit = page_bounds(query.get("offset"), query.get("limit"))
    found = source.dead_letters(offset, limit)
    actions = _table(
        ("action", "rule", "kind", "target", "key", "attempts", "last error", ""),
        (
            (
                f"<code>{_e(a['action_id'])}</code>",
                _e(a["rule"]),
                _e(a["kind"]),
                _e(a["target"]),
                _e(a["event_key"]),
                _e(a["attempts"]),
                _e(a["last_error"]),
                _button(
                    f"{API_PREFIX}/dead-letters/{quote(a['action_id'], safe='')}/replay",
                    "Replay",
                    confirm="Deliver this action again?",
                ),
            )
            for a in found["actions"]
        ),
        id_="dead-actions",
    )
    records = _table(
        ("topic", "partition", "offset", "error", "key"),
        (
            (
                _e(r["topic"]),
                _e(r["partition"]),
                _e(r["offset"]),
                _e(f"{r['error_class']}: {r['error']}"),
                _e(r["key"]),
            )
            for r in found["records"]
        ),
        id_="dead-records",
    )
    more = ""
    if offset + limit < max(found["total_actions"], found["total_records"]):
        more += f'<a href="/dead-letters?{urlencode({"offset": offset + limit})}">Next page</a> '
    if offset > 0:
        back = urlencode({"offset": max(0, offset - limit)})
        more += f'<a href="/dead-letters?{back}">Previous page</a>'
    body = (
        f"<h2>Dead actions ({found['total_actions']})</h2>{actions}"
        f"<h2>Dead records ({found['total_records']})</h2>"
        "<p class=note>Records that could not become events are listed, not replayed: send "
        f"the event anew.</p>{records}<p>{more}</p>"
    )
    return _layout("Dead letters", body, active="/dead-letters", logout=source.secured)


# -- lineage -----------------------------------------------------------------------------


def lineage_page(source: AdminSource, query: Mapping[str, str]) -> str:
    field = query.get("by", "event_id")
    if field not in LINEAGE_KEYS:
        field = "event_id"
    value = query.get("q", "")
    options = "".join(
        f'<option value="{k}"{" selected" if k == field else ""}>{k}</option>' for k in LINEAGE_KEYS
    )
    form = (
        '<form method="get" action="/lineage" class="search"><select name="by">'
        f'{options}</select><input name="q" value="{_e(value) if value else ""}" size="48" '
        'placeholder="an event id, topic/partition/offset, an action id, a key…" required>'
        "<button type=submit>Search</button></form>"
    )
    results = ""
    if value:
        try:
            found = source.lineage({field: value}, 50)
            results = _traces(found["traces"])
        except AdminError as exc:
            results = f'<p class="problem">{_e(exc.detail)}</p>'
    return _layout("Lineage", form + results, active="/lineage", logout=source.secured)


def _traces(traces: Sequence[Mapping[str, Any]]) -> str:
    if not traces:
        return '<p class="note" id="no-trace">Nothing found.</p>'
    out = []
    for trace in traces:
        event = trace.get("event") or {}
        ident = event.get("event_id") or event.get("id")
        where = "/".join(str(event.get(k)) for k in ("topic", "partition", "offset")
                         if event.get(k) is not None)  # fmt: skip
        actions = _table(
            ("action", "rule", "kind", "target", "state", "attempts"),
            (
                (
                    f"<code>{_e(a.get('action_id'))}</code>",
                    _e(a.get("rule")),
                    _e(a.get("kind")),
                    _e(a.get("target")),
                    _badge(str(a.get("state")), a.get("state") in ("done", "delivered")),
                    _attempts(a),
                )
                for a in trace.get("actions") or []
            ),
        )
        out.append(
            f'<article class="trace"><h2>Event <code>{_e(ident)}</code> <small>{_e(where)}'
            f"</small></h2><details><summary>event</summary><pre>"
            f"{_e(json.dumps(event, indent=2, default=str))}</pre></details>{actions}</article>"
        )
    return "".join(out)


def _attempts(action: Mapping[str, Any]) -> str:
    """Its attempts worth telling (failures, and the delivery after one); a first-try
    delivery keeps none, only when it was settled."""
    attempts: Sequence[Mapping[str, Any]] = action.get("attempts") or []
    items = "".join(
        f"<li>{_e(_when(a.get('at')))}: <b>{_e(a.get('outcome'))}</b>"
        + (f" {_e(a.get('detail'))}" if a.get("detail") else "")
        + "</li>"
        for a in attempts
    )
    if action.get("state") == "done" and not attempts:
        settled = _e(_when(action.get("settled_by")))
        items = f"<li>delivered at the first attempt, settled {settled}</li>"
    if action.get("engine_ref"):
        items += f"<li>run in its engine: <code>{_e(action['engine_ref'])}</code></li>"
    if action.get("last_error") and action.get("state") != "done":
        items += f"<li>last error: {_e(action['last_error'])}</li>"
    return f'<ol class="attempts">{items}</ol>' if items else "none yet"


def _when(at: Any) -> str:
    """Epoch seconds as UTC time; anything else as it is."""
    if isinstance(at, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) + " UTC"
    return "–" if at is None else str(at)
