"""The connector's share of the HTTP gateway in the tests: what ``run`` with an ``http:``
section does to the gateway's topic (its own consumer group, the rules wrapped in
:class:`~connector.gateway.waiters.HttpIndex`, a dispatcher), in a thread of the test.

The gateway only produces; without one of these (or a ``run`` process) nothing confirms
its sends.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConsumerGroupDescription

from checkpoint import open_store
from checkpoint.base import CheckpointStore
from connector.gateway.waiters import HttpIndex, queue_prefix
from connector.pipeline import PipelineSettings
from connector.rules import Rule
from connector.rules.trigger import TriggerEngine
from connector.service import ConnectorService
from connector.targets import LogTarget
from tests.support import wait_for


class Connector:
    """A :class:`ConnectorService` reading ``topic`` (namespace ``namespace``) into the
    store at ``store_url`` (a store object of its own, as a separate process has)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        store_url: str,
        *,
        namespace: str = "http",
        rules: Sequence[dict[str, Any]] = (),
        log_path: Path | None = None,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.group = f"run-{uuid.uuid4().hex[:10]}"
        settings = PipelineSettings(
            bootstrap_servers=bootstrap,
            group_id=self.group,
            topics={topic: namespace},
            batch_size=200,
            linger_ms=5,
        )
        engine = TriggerEngine([Rule.model_validate(r) for r in rules])
        self.service = ConnectorService(
            settings,
            open_store(store_url),
            HttpIndex(engine, namespace),
            {"log": LogTarget("log", log_path)},
            after_batch=after_batch,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None

    def start(self, timeout: float = 60) -> Connector:
        """Run it in a thread; return once the group has assigned it the partitions."""
        self._thread = threading.Thread(target=self._run, name="test-connector", daemon=True)
        self._thread.start()

        def joined() -> bool:
            assert self.failure is None, f"the connector stopped: {self.failure!r}"
            pipeline = self.service.pipeline
            return pipeline is not None and pipeline.stats.joined and bool(pipeline.owned)

        wait_for(joined, timeout=timeout, what="the connector to own the gateway's partitions")
        return self

    def _run(self) -> None:
        try:
            self.service.run(self._stop)
        except BaseException as exc:  # reported by start() and stop()
            self.failure = exc

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(60)
            assert not thread.is_alive(), "the connector did not stop"
        assert self.failure is None, f"the connector failed: {self.failure!r}"


def queued(
    store: CheckpointStore, workflow_id: str, event_key: str, namespace: str = "http"
) -> list[str]:
    """The event ids in a pair's waiter queue, in arrival order."""
    rows = store.read_rule_state_range(queue_prefix(namespace, workflow_id, event_key), 10_000)
    return [event_id for _, event_id in rows]


def _described(admin: AdminClient, group: str) -> ConsumerGroupDescription | None:
    try:
        return admin.describe_consumer_groups([group])[group].result(30)
    except KafkaException:  # NOT_COORDINATOR while a group is being set up: ask again
        return None


def groups_reading(admin: AdminClient, topic: str) -> set[str]:
    """The consumer groups with a member assigned partitions of ``topic``."""
    found = set()
    for listing in admin.list_consumer_groups().result(30).valid:
        group = listing.group_id
        described = wait_for(
            lambda g=group: _described(admin, g), timeout=30, what=f"a description of {group}"
        )
        assigned = [tp for m in described.members for tp in m.assignment.topic_partitions]
        if any(tp.topic == topic for tp in assigned):
            found.add(group)
    return found


def members_cover(
    admin: AdminClient, group: str, partitions: dict[str, int], *, members: int
) -> bool:
    """``group`` has ``members`` members, and every partition of ``partitions`` (topic ->
    count) is assigned to one of them."""
    described = _described(admin, group)
    if described is None:
        return False
    assigned = [tp for m in described.members for tp in m.assignment.topic_partitions]
    counts = {t: sum(1 for tp in assigned if tp.topic == t) for t in partitions}
    return len(described.members) == members and counts == partitions
