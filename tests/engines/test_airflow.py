"""The ``airflow`` target against a real Airflow 3 (API server, scheduler, DAG processor,
triggerer) running the example DAG ``examples/airflow/kec_orders_dag.py``."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkpoint.base import ActionState
from connector.common.template import Template
from connector.targets.airflow import PARKED, AirflowTarget
from devkit.server import free_port
from kec.action import Action, ActionKind
from kec.errors import TargetError, TargetRejected
from tests.engines.conftest import AIRFLOW_DAG
from tests.engines.harness import (
    NAMESPACE,
    action_of,
    connector_run,
    crash_then_recover,
    direct_action,
)
from tests.engines.servers import AirflowServer
from tests.support import wait_for

DAG_RUNS = f"/api/v2/dags/{AIRFLOW_DAG}/dagRuns"


class Api:
    """Reads what Airflow shows, with a token of its own."""

    def __init__(self, server: AirflowServer) -> None:
        self._client = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.token()}"},
            timeout=30,
        )

    def get(self, path: str) -> Any:
        response = self._client.get(path)
        response.raise_for_status()
        return response.json()

    def run_ids(self, prefix: str) -> list[str]:
        runs = self.get(f"{DAG_RUNS}?limit=100")["dag_runs"]
        return sorted(r["dag_run_id"] for r in runs if r["dag_run_id"].startswith(prefix))

    def tasks(self, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.get(f"{DAG_RUNS}/{run_id}/taskInstances")["task_instances"]
        return {t["task_id"]: t for t in found}

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def api(airflow: AirflowServer) -> Any:
    client = Api(airflow)
    yield client
    client.close()


def rule(name: str, key: str, action: str, **extra: str) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "key": key, "action": action,
            "workflow": "order", "target": "engine", **extra}  # fmt: skip


def target_yaml(server: AirflowServer, prefix: str) -> str:
    return (
        f'{{type: airflow, url: "{server.url}", username: {server.username},'
        f' password: "{server.password}", dags: {{order: {AIRFLOW_DAG}}},'
        f' run_id_prefix: "{prefix}", concurrency: 4}}'
    )


def test_an_event_starts_one_dag_run_across_a_kill_after_dispatch(
    airflow: AirflowServer,
    api: Api,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    prefix = f"kec_{uuid.uuid4().hex[:8]}__"
    rules = [rule("start-order", "order", "start")]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(airflow, prefix), rules
    ) as run:
        event_id = run.send("order", "order-42")
        start = action_of("start-order", event_id)
        crash_then_recover(run, start, lambda: len(api.run_ids(prefix)) == 1)
        assert run.stop() == 0

    # The resend got 409 for the run id that exists: still one run, with the event as conf.
    assert api.run_ids(prefix) == [f"{prefix}{start}"]
    conf = api.get(f"{DAG_RUNS}/{prefix}{start}")["conf"]
    assert conf["action_id"] == start and conf["rule"] == "start-order"
    event = conf["event"]
    assert (event["key"], event["value"], event["event_id"], event["namespace"]) == (
        "order",
        "order-42",
        event_id,
        NAMESPACE,
    )


def test_task_actions_reach_the_dag_run_named_by_the_context(
    airflow: AirflowServer,
    api: Api,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    prefix = f"kec_{uuid.uuid4().hex[:8]}__"
    rules = [
        rule("start-order", "order", "start"),
        rule("approve", "approve", "START", task="approve"),  # answers the HITL gate
        rule("halt", "halt", "STOP", task="approve"),
        rule("redo", "redo", "RESTART", task="extract"),
        rule("nope", "nope", "STOP", task="no_such_task"),  # refused: 404
        rule("cancel", "cancel", "stop"),
    ]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(airflow, prefix), rules
    ) as run:
        run.start()
        starts = [action_of("start-order", run.send("order", name)) for name in ("a", "b", "c")]
        run.wait_settled(*starts)
        one, two, three = (f"{prefix}{a}" for a in starts)

        # START waits (retried) until the gate is reached, then answers it.
        approve = action_of("approve", run.send("approve", "yes", context=one))
        halt = action_of("halt", run.send("halt", "no", context=two))
        nope = action_of("nope", run.send("nope", "?", context=one))
        # A stop sent while Airflow was still starting the run was seen once to leave the
        # run "success" in the end; the user's case is a run that waits at its gate.
        wait_for(
            lambda: api.tasks(three).get("approve", {}).get("state") in PARKED,
            timeout=180,
            interval=0.5,
            what="run three to wait at its gate",
        )
        cancel = action_of("cancel", run.send("cancel", "enough", context=three))
        run.wait_settled(approve, halt, nope, cancel, timeout=180)
        try:
            wait_for(
                lambda: api.tasks(one)["load"]["state"] == "success",
                timeout=240,
                interval=0.5,
                what="run one to finish after its approval",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its tasks now: {api.tasks(one)}") from exc
        redo = action_of("redo", run.send("redo", "again", context=one))
        run.wait_settled(redo)
        assert run.stop() == 0

    one_tasks, two_tasks = api.tasks(one), api.tasks(two)
    gate = api.get(f"{DAG_RUNS}/{one}/taskInstances/approve/-1/hitlDetails")
    assert gate["response_received"] and gate["chosen_options"] == ["Approve"]
    assert two_tasks["approve"]["state"] == "failed"
    # The STOP of approve in run two left its extract alone, to finish as usual.
    wait_for(lambda: api.tasks(two)["extract"]["state"] == "success", timeout=60)
    three_run = api.get(f"{DAG_RUNS}/{three}")
    assert three_run["state"] == "failed", (three_run, api.tasks(three))
    # RESTART cleared extract of run one only, and left its action id as the note.
    assert one_tasks["extract"]["note"].startswith(f"kafka-event-connector action {redo}")
    wait_for(lambda: api.tasks(one)["extract"]["try_number"] == 2, timeout=180, what="a new try")
    assert two_tasks["extract"]["try_number"] == 1

    dead = run.dead_letters()
    assert set(dead) == {nope}
    error = dead[nope]["last_error"]
    assert error.startswith("TargetRejected") and "404" in error
    assert "task_id: `no_such_task` was not found" in error
    assert run.actions(ActionState.DEAD).keys() == {nope}


_action = partial(direct_action, AIRFLOW_DAG)


def _deliver(target: AirflowTarget, action: Action) -> None:
    """Deliver as the dispatcher would: a transient failure (Airflow's own database busy
    on this loaded machine answers 500) is tried again, a rejection fails the test."""

    def delivered() -> bool:
        try:
            target.deliver(action)
        except TargetError as err:
            if not err.retriable:
                raise
            return False
        return True

    wait_for(delivered, timeout=60, interval=1.0, what=f"{action.kind.value} delivered")


def test_duplicates_are_delivered_and_a_restart_is_applied_once(
    airflow: AirflowServer, api: Api
) -> None:
    prefix = f"kec_{uuid.uuid4().hex[:8]}__"
    target = AirflowTarget(
        "engine", airflow.url, username=airflow.username, password=airflow.password,
        run_id_prefix=prefix,
    )  # fmt: skip
    with target:
        start = _action(ActionKind.START_WORKFLOW, f"e-{uuid.uuid4()}")
        _deliver(target, start)
        _deliver(target, start)
        run_id = target.run_id(start)
        assert api.run_ids(prefix) == [run_id]
        stop = _action(ActionKind.STOP_TASK, f"e-{uuid.uuid4()}", task="approve", context=run_id)
        wait_for(
            lambda: api.tasks(run_id)["extract"]["state"] == "success", timeout=120, interval=0.5
        )
        _deliver(target, stop)
        _deliver(target, stop)  # the task is failed already: delivered
        restart = _action(ActionKind.RESTART_TASK, f"e-{uuid.uuid4()}", task="extract",
                          context=run_id)  # fmt: skip
        _deliver(target, restart)
        _deliver(target, restart)  # the note names this action: not cleared again
        wait_for(
            lambda: api.tasks(run_id)["extract"]["state"] == "success", timeout=120, interval=0.5
        )
        assert api.tasks(run_id)["extract"]["try_number"] == 2
        _deliver(target, restart)
        assert api.tasks(run_id)["extract"]["try_number"] == 2


def test_unknown_dag_is_refused_and_an_unreachable_server_is_transient(
    airflow: AirflowServer,
) -> None:
    target = AirflowTarget(
        "engine", airflow.url, username=airflow.username, password=airflow.password,
        dags={AIRFLOW_DAG: "no_such_dag"},
    )  # fmt: skip
    with target, pytest.raises(TargetRejected, match="no_such_dag' not found"):
        target.deliver(_action(ActionKind.START_WORKFLOW, "e"))
    down = AirflowTarget("engine", f"http://127.0.0.1:{free_port()}", token="t")
    with down, pytest.raises(TargetError, match="ConnectError") as failure:
        down.deliver(_action(ActionKind.START_WORKFLOW, "e"))
    assert failure.value.retriable
    wrong = AirflowTarget("engine", airflow.url, username="admin", password="wrong")
    with wrong, pytest.raises(TargetRejected, match="auth/token answered 401"):
        wrong.deliver(_action(ActionKind.START_WORKFLOW, "e"))


def test_a_template_shapes_the_dag_runs_conf(airflow: AirflowServer, api: Api) -> None:
    prefix = f"kec_{uuid.uuid4().hex[:8]}__"
    shape = {"order": "{{ event_key }}", "source": "{{ payload }}", "id": "{{ action_id }}"}
    target = AirflowTarget(
        "engine", airflow.url, username=airflow.username, password=airflow.password,
        run_id_prefix=prefix, template=Template(shape),
    )  # fmt: skip
    start = _action(ActionKind.START_WORKFLOW, f"e-{uuid.uuid4()}")
    with target:
        _deliver(target, start)
        conf = api.get(f"{DAG_RUNS}/{target.run_id(start)}")["conf"]
    assert conf == {"order": "k", "source": dict(start.payload), "id": start.action_id}


def test_a_batch_starts_one_dag_run_with_its_events(
    airflow: AirflowServer,
    api: Api,
    bootstrap: str,
    new_topic: Callable[..., str],
    group_id: str,
    tmp_path: Path,
) -> None:
    """A time-driven rule's action reaches the engine like any other: three events, one
    batch, one DAG run whose conf carries the three."""
    prefix = f"kec_{uuid.uuid4().hex[:8]}__"
    rules = [{**rule("load-lines", "line-*", "start"), "batch": {"size": 3, "within": 3600}}]
    with connector_run(
        tmp_path, bootstrap, new_topic(1), group_id, target_yaml(airflow, prefix), rules
    ) as run:
        run.start()
        sent = [run.send(f"line-{i}", f"row {i}") for i in range(3)]
        (run_id,) = wait_for(lambda: api.run_ids(prefix), timeout=120, what="a DAG run")
        assert run.stop() == 0
    conf = api.get(f"{DAG_RUNS}/{run_id}")["conf"]
    assert conf["rule"] == "load-lines" and conf["event_ids"] == sent
    assert conf["event"]["count"] == 3
    assert [e["value"] for e in conf["event"]["events"]] == ["row 0", "row 1", "row 2"]
