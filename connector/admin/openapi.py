"""The admin API's OpenAPI 3.1 document, served at ``/api/v1/openapi.json``.

Written here by hand beside the routes (:mod:`connector.admin.app`); a test checks it
with an OpenAPI validator and that every route served under ``/api/v1/`` is in it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["API_PREFIX", "LINEAGE_PARAMS", "openapi_document"]

API_PREFIX = "/api/v1"
# The lineage query's keys, one per request (``namespace`` may narrow any of them).
LINEAGE_PARAMS = ("event_id", "coordinates", "action_id", "key", "context")

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad request (the error names what)",
        401: "Missing or wrong bearer token",
        403: "A console session posted without the console's header",
        404: "Not found",
        422: "A query parameter out of range",
        501: "Not available in this run (one without a config file to reload)",
    }
    return {str(code): _json(_ERROR, text[code]) for code in (401, *codes)}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


_NULL_INT = {"type": ["integer", "null"]}
_NULL_STR = {"type": ["string", "null"]}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
]


def _get(op: str, summary: str, schema: dict[str, Any], *errors: int, **more: Any) -> Any:
    return {
        "get": {
            "operationId": op,
            "summary": summary,
            "responses": {"200": _json(schema, summary), **_errors(*errors)},
            **more,
        }
    }


def _post(op: str, summary: str, schema: dict[str, Any], *errors: int, **more: Any) -> Any:
    return {
        "post": {
            "operationId": op,
            "summary": summary,
            "responses": {"200": _json(schema, summary), **_errors(403, *errors)},
            **more,
        }
    }


def _pause_paths(kind: str) -> dict[str, Any]:
    singular = kind[:-1]
    result = _obj(kind={"type": "string"}, name={"type": "string"}, paused={"type": "boolean"})
    return {
        f"{API_PREFIX}/{kind}/{{name}}/{verb}": _post(
            f"{verb}{singular.title()}",
            f"{verb.title()} the {singular} NAME",
            result,
            400,
            404,
            501,
            parameters=[_NAME],
        )
        for verb in ("pause", "resume")
    }


def openapi_document() -> dict[str, Any]:
    """The document (a fresh dict each call)."""
    partition = _obj(
        topic={"type": "string"},
        partition={"type": "integer"},
        owner={"type": "string"},
        epoch={"type": "integer"},
        next_offset=_NULL_INT,
        lag=_NULL_INT,
        stopped=_NULL_STR,
        event_time_ms=_NULL_INT,
    )
    rule = _obj(
        name={"type": "string"},
        namespace=_NULL_STR,
        target=_NULL_STR,
        action=_NULL_STR,
        fired={"type": "integer"},
        fired_this_run={"type": "integer"},
        paused={"type": "boolean"},
        configured={"type": "boolean"},
    )
    target = _obj(
        name={"type": "string"},
        type={"type": "string"},
        health={"type": "string", "enum": ["ok", "degraded", "failing", "paused", "unknown"]},
        delivered={"type": "integer"},
        failed={"type": "integer"},
        dead={"type": "integer"},
        paused={"type": "boolean"},
    )
    attempt = _obj(
        n={"type": "integer"}, at={}, target=_NULL_STR, outcome={"type": "string"}, detail={}
    )
    trace_action = _obj(
        action_id={"type": "string"},
        rule={"type": "string"},
        kind={"type": "string"},
        target={"type": "string"},
        state={"type": "string", "enum": ["pending", "done", "dead"]},
        settled_by={},
        last_error=_NULL_STR,
        engine_ref=_NULL_STR,
        attempts={"type": "array", "items": attempt},
    )
    lineage = {
        "name": "",
        "in": "query",
        "schema": {"type": "string"},
    }
    paths: dict[str, Any] = {
        f"{API_PREFIX}/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document (no token needed)",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
            }
        },
        f"{API_PREFIX}/status": _get(
            "status",
            "Health checks, version, instance, outbox and totals",
            _obj(
                status={"type": "string"},
                ready={"type": "boolean"},
                checks={"type": "object", "additionalProperties": {"type": "boolean"}},
                version={"type": "string"},
                instance={"type": "string"},
                group_id={"type": "string"},
                uptime_seconds={"type": "number"},
                processes={},
                outbox=_obj(pending={"type": "integer"}, dead={"type": "integer"}),
                totals={"type": "object", "additionalProperties": {"type": "number"}},
            ),
        ),
        f"{API_PREFIX}/partitions": _get(
            "partitions",
            "Partitions: owner, owner epoch, next offset, lag",
            _obj(partitions={"type": "array", "items": partition}),
        ),
        f"{API_PREFIX}/rules": _get(
            "rules", "Rules and how often each fired", _obj(rules={"type": "array", "items": rule})
        ),
        f"{API_PREFIX}/targets": _get(
            "targets",
            "Targets, their deliveries and health",
            _obj(targets={"type": "array", "items": target}),
        ),
        f"{API_PREFIX}/history": _get(
            "history",
            "Throughput and delivery latency over the last minutes",
            _obj(
                interval_seconds={"type": "number"},
                at={"type": "array", "items": {"type": "number"}},
                records_per_second={"type": "array", "items": {"type": "number"}},
                delivered_per_second={"type": "array", "items": {"type": "number"}},
                delivery_p50_ms={"type": "array", "items": {"type": ["number", "null"]}},
                delivery_p95_ms={"type": "array", "items": {"type": ["number", "null"]}},
            ),
        ),
        f"{API_PREFIX}/dead-letters": _get(
            "deadLetters",
            "Dead actions (replayable) and dead records, a page of each",
            _obj(
                offset={"type": "integer"},
                limit={"type": "integer"},
                total_actions={"type": "integer"},
                total_records={"type": "integer"},
                actions={"type": "array", "items": {"type": "object"}},
                records={"type": "array", "items": {"type": "object"}},
            ),
            422,
            parameters=_PAGE,
        ),
        f"{API_PREFIX}/dead-letters/{{action_id}}/replay": _post(
            "replayDeadAction",
            "Put one dead action back for delivery (once)",
            _obj(action_id={"type": "string"}, replayed={"type": "integer"}),
            404,
            parameters=[
                {"name": "action_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
        ),
        f"{API_PREFIX}/lineage": _get(
            "lineage",
            "What became of events: their actions and deliveries (one query key)",
            _obj(
                query={"type": "object"},
                traces={
                    "type": "array",
                    "items": _obj(
                        event={"type": "object"}, actions={"type": "array", "items": trace_action}
                    ),
                },
            ),
            400,
            422,
            parameters=[
                *({**lineage, "name": key} for key in (*LINEAGE_PARAMS, "namespace")),
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                },
            ],
        ),
        **_pause_paths("rules"),
        **_pause_paths("targets"),
        f"{API_PREFIX}/reload": _post(
            "reload", "Reload the config file's rules and targets", {"type": "object"}, 400, 501
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kafka-event-connector admin API",
            "version": "1",
            "description": "The admin API of a running connector (event-connector run with "
            "an admin: section). Every error body is {error, detail}. On a loopback host "
            "without a token the API is open; otherwise it needs 'Authorization: Bearer "
            "TOKEN' (or the console's session cookie, with the header X-KEC-Console: 1 on "
            "POST).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {}},
                }
            },
        },
    }
