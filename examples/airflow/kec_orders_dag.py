"""A tiny Airflow 3 DAG for the connector's ``airflow`` target (examples/airflow/README.md).

``extract`` reads the event the run was started with (``conf["event"]``); ``approve`` is a
human-in-the-loop gate that a ``START`` task action answers; ``load`` runs after it.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import dag, get_current_context, task


@dag(
    dag_id="kec_orders",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1),
    catchup=False,
    tags=["kafka-event-connector"],
)
def kec_orders() -> None:
    @task
    def extract() -> dict[str, Any]:
        conf = get_current_context()["dag_run"].conf or {}
        event = conf.get("event", {})
        print(f"started by event {event.get('event_id')}: {event.get('key')}={event.get('value')}")
        return event

    @task
    def load(event: dict[str, Any]) -> str:
        return f"loaded {event.get('key')}"

    gate = ApprovalOperator(task_id="approve", subject="Load this order?")
    event = extract()
    event >> gate >> load(event)


kec_orders()
