"""A tiny Prefect flow for the connector's ``prefect`` target, served from this process.

Run it with Prefect's own Python (``pip install prefect``), next to a Prefect server::

    PREFECT_API_URL=http://127.0.0.1:4200/api python examples/prefect/flow.py

``serve`` creates the deployment ``on-order/kec-example`` and runs its flow runs; each run
gets the connector's input as its ``trigger`` parameter: ``{"action_id", "rule",
"namespace", "event_key", "event_ids", "event": {"event_id", "key", "value", …}}``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger


@flow(name="on-order")
def on_order(trigger: dict[str, Any]) -> str:
    event = trigger.get("event", {})
    get_run_logger().info("event %s: %s=%s", event.get("event_id"), event["key"], event["value"])
    return str(event["value"])


if __name__ == "__main__":
    on_order.serve(name="kec-example")
