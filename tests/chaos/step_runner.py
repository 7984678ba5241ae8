"""One durable Kafka step in a process of its own, for tests/chaos/test_step_crash.py.

    python -m tests.chaos.step_runner BOOTSTRAP GROUP TOPIC STORE_URL STEP_ID

runs ``wait_for_event(QueueEventListener, TOPIC)`` as step ``STEP_ID`` in the store at
``STORE_URL`` and prints the event as JSON. ``KEC_CRASH_AT=before_event_checkpointed``
makes it die by SIGKILL once the step is stored, before the Kafka commit.
"""

from __future__ import annotations

import asyncio
import sys

from checkpoint import open_store
from listeners import kafka
from listeners.durable import wait_for_event
from listeners.kafka import QueueEventListener


def main(argv: list[str]) -> int:
    bootstrap, group, topic, store_url, step_id = argv
    kafka.configure(bootstrap_servers=bootstrap, group_id=group)
    with open_store(store_url) as store:
        event = asyncio.run(
            wait_for_event(QueueEventListener, topic, timeout=60, step_id=step_id, store=store)
        )
    print(event.to_json(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
