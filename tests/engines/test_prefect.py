"""The ``prefect`` target against a real Prefect 3 server, with the example flow served
(``examples/prefect/flow.py``)."""

from __future__ import annotations

import datetime
import threading
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkpoint.base import ActionState
from connector.common.template import Template
from connector.targets.prefect import PrefectTarget
from devkit.server import free_port
from kec.action import Action, ActionKind
from kec.errors import TargetError, TargetRejected
from tests.engines.conftest import PREFECT_DEPLOYMENT
from tests.engines.harness import (
    NAMESPACE,
    action_of,
    connector_run,
    crash_then_recover,
    direct_action,
)
from tests.engines.servers import PrefectServer
from tests.support import wait_for


def api(method: str, url: str, body: Any = None) -> Any:
    """One call to Prefect's API from the test; a 503 (its SQLite busy) is tried again."""

    def attempt() -> httpx.Response | None:
        reply = httpx.request(method, url, json=body, timeout=30)
        return None if reply.status_code == 503 else reply

    reply = wait_for(attempt, timeout=60, interval=0.2, what=f"{method} {url}")
    reply.raise_for_status()
    return reply.json()


def flow_runs(server: PrefectServer, key_prefix: str) -> list[dict[str, Any]]:
    """The flow runs whose idempotency key starts with ``key_prefix``."""
    runs = api("POST", f"{server.api_url}/flow_runs/filter", {"limit": 200})
    return [r for r in runs if (r.get("idempotency_key") or "").startswith(key_prefix)]


def flow_run(server: PrefectServer, run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = api("GET", f"{server.api_url}/flow_runs/{run_id}")
    return result


def rule(name: str, key: str, action: str, workflow: str = "order") -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "key": key, "action": action,
            "workflow": workflow, "target": "engine"}  # fmt: skip


def target_yaml(server: PrefectServer, key_prefix: str) -> str:
    return (
        f'{{type: prefect, url: "{server.api_url}", key_prefix: "{key_prefix}",'
        f" deployments: {{order: {PREFECT_DEPLOYMENT}}}, concurrency: 4}}"
    )


def test_an_event_starts_one_flow_run_across_a_kill_after_dispatch(
    prefect: PrefectServer,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    key_prefix = f"kec-{uuid.uuid4().hex[:8]}:"
    rules = [rule("start-order", "order", "start")]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(prefect, key_prefix), rules
    ) as run:
        event_id = run.send("order", "order-42")
        start = action_of("start-order", event_id)
        crash_then_recover(run, start, lambda: len(flow_runs(prefect, key_prefix)) == 1)
        assert run.stop() == 0

    # The resend got 200 and the same run back: one run, which the served flow completed.
    (only,) = flow_runs(prefect, key_prefix)
    assert only["idempotency_key"].endswith(f":{start}")
    wait_for(
        lambda: flow_run(prefect, only["id"])["state"]["type"] == "COMPLETED",
        timeout=120,
        what="the served flow to run",
    )
    trigger = only["parameters"]["trigger"]
    assert trigger["action_id"] == start and trigger["rule"] == "start-order"
    event = trigger["event"]
    assert (event["key"], event["value"], event["event_id"], event["namespace"]) == (
        "order",
        "order-42",
        event_id,
        NAMESPACE,
    )


def _scheduled_later(server: PrefectServer) -> str:
    """A flow run of the example deployment scheduled an hour ahead: one to stop."""
    flow, name = PREFECT_DEPLOYMENT.split("/")
    deployment = api("GET", f"{server.api_url}/deployments/name/{flow}/{name}")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    run = api(
        "POST",
        f"{server.api_url}/deployments/{deployment['id']}/create_flow_run",
        {
            "idempotency_key": f"test-{uuid.uuid4()}",  # so a retried POST makes one run
            "parameters": {"trigger": {"event": {"key": "k", "value": "v"}}},
            "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": later.isoformat()}},
        },
    )
    return str(run["id"])


def test_stop_cancels_the_run_named_by_the_context_and_a_refusal_is_dead_lettered(
    prefect: PrefectServer,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    rules = [
        rule("cancel", "cancel", "stop"),
        rule("start-missing", "missing", "start", workflow="on-order/no-such-deployment"),
    ]
    waiting, other = _scheduled_later(prefect), _scheduled_later(prefect)
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(prefect, "kec:"), rules
    ) as run:
        run.start()
        cancel = action_of("cancel", run.send("cancel", "enough", context=waiting))
        missing = action_of("start-missing", run.send("missing", "?"))
        run.wait_settled(cancel, missing)
        assert run.stop() == 0

    assert flow_run(prefect, waiting)["state"]["type"] == "CANCELLED"
    assert flow_run(prefect, other)["state"]["type"] == "SCHEDULED"
    dead = run.dead_letters()
    assert set(dead) == {missing}
    error = dead[missing]["last_error"]
    assert error.startswith("TargetRejected") and "404" in error
    assert "Deployment not found" in error
    assert run.actions(ActionState.DONE).keys() == {cancel}


_action = partial(direct_action, PREFECT_DEPLOYMENT)


def deliver(target: PrefectTarget, action: Action) -> None:
    """Deliver as the dispatcher would: a transient failure (Prefect on SQLite answers a
    busy database with 503) is tried again; a refusal fails the test."""

    def attempt() -> bool:
        try:
            target.deliver(action)
        except TargetRejected:
            raise
        except TargetError:
            return False
        return True

    wait_for(attempt, timeout=60, interval=0.2, what=f"delivery of {action.action_id}")


def test_racing_duplicates_make_one_flow_run(prefect: PrefectServer) -> None:
    key_prefix = f"kec-{uuid.uuid4().hex[:8]}:"
    target = PrefectTarget("engine", prefect.api_url, key_prefix=key_prefix)
    start = _action(ActionKind.START_WORKFLOW, f"e-{uuid.uuid4()}")
    errors: list[BaseException] = []

    def race() -> None:
        try:
            deliver(target, start)
        except BaseException as exc:
            errors.append(exc)

    with target:
        threads = [threading.Thread(target=race) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        assert errors == []
        (only,) = flow_runs(prefect, key_prefix)
        wait_for(lambda: flow_run(prefect, only["id"])["state"]["type"] == "COMPLETED", timeout=120)
        deliver(target, start)  # after the run completed: still the same run
        assert [r["id"] for r in flow_runs(prefect, key_prefix)] == [only["id"]]
        stop = _action(ActionKind.STOP_WORKFLOW, f"e-{uuid.uuid4()}", context=only["id"])
        deliver(target, stop)  # the run is over: nothing to stop, delivered
        assert flow_run(prefect, only["id"])["state"]["type"] == "COMPLETED"


def test_bad_parameters_are_refused_and_an_unreachable_server_is_transient(
    prefect: PrefectServer,
) -> None:
    target = PrefectTarget("engine", prefect.api_url, event_parameter="not_a_parameter")
    with target, pytest.raises(TargetRejected, match=r"409 Conflict.*'trigger' is a required"):
        target.deliver(_action(ActionKind.START_WORKFLOW, f"e-{uuid.uuid4()}"))
    down = PrefectTarget("engine", f"http://127.0.0.1:{free_port()}/api")
    with down, pytest.raises(TargetError, match="ConnectError") as failure:
        down.deliver(_action(ActionKind.START_WORKFLOW, "e"))
    assert failure.value.retriable


def test_a_template_shapes_the_flow_runs_parameters(prefect: PrefectServer) -> None:
    key_prefix = f"kec-{uuid.uuid4().hex[:8]}:"
    shape = {"trigger": {"event": {"key": "{{ event_key }}", "value": "{{ value }}"},
                         "action": "{{ action_id }}", "by": "rule {{ rule }}"}}  # fmt: skip
    target = PrefectTarget(
        "engine", prefect.api_url, key_prefix=key_prefix, template=Template(shape)
    )
    start = _action(ActionKind.START_WORKFLOW, f"e-{uuid.uuid4()}")
    with target:
        deliver(target, start)
    (only,) = flow_runs(prefect, key_prefix)
    assert only["parameters"] == {
        "trigger": {
            "event": {"key": "k", "value": start.payload["value"]},
            "action": start.action_id,
            "by": "rule direct",
        }
    }


def test_a_batch_starts_one_flow_run_with_its_events(
    prefect: PrefectServer,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    """A time-driven rule's action reaches the engine like any other: three events, one
    batch, one flow run whose parameter carries the three (the example flow itself reads
    one event's key: what it makes of a batch is not the connector's part)."""
    key_prefix = f"kec-{uuid.uuid4().hex[:8]}:"
    rules = [{**rule("load-lines", "line-*", "start"), "batch": {"size": 3, "within": 3600}}]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(prefect, key_prefix), rules
    ) as run:
        run.start()
        sent = [run.send(f"line-{i}", f"row {i}") for i in range(3)]
        (only,) = wait_for(lambda: flow_runs(prefect, key_prefix), timeout=120, what="a flow run")
        assert run.stop() == 0
    trigger = only["parameters"]["trigger"]
    assert trigger["rule"] == "load-lines" and trigger["event_ids"] == sent
    assert trigger["event"]["count"] == 3
    assert [e["value"] for e in trigger["event"]["events"]] == ["row 0", "row 1", "row 2"]
