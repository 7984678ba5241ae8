"""A service's start waits for Kafka (``run``, ``gateway``): a broker restarting, or a
container started before Kafka's, is waited out as the running service waits it out;
settings Kafka refuses are not. The one-shot commands do not wait: they answer within
seconds (:func:`kec.kafka.reach`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kec.errors import BrokerUnavailable

__all__ = ["KAFKA_RETRY_SECONDS", "KAFKA_WAIT_SAY_EVERY", "once_kafka_answers"]

log = logging.getLogger(__name__)

KAFKA_RETRY_SECONDS = 2.0  # seconds between two tries to reach Kafka
KAFKA_WAIT_SAY_EVERY = 30.0  # seconds between two log lines while it waits


def once_kafka_answers(step: Callable[[], object], stop: threading.Event) -> None:
    """``step`` (the start's requests to Kafka), tried again while no broker can be reached
    for a cause that may pass (connection refused, name lookup failed, timed out: a broker
    restarting, a container not up yet) until it answers or ``stop`` is set; a warning the
    first time and every 30 s. The settings refused (TLS, SASL, not a Kafka port) raise at
    once: waiting cannot mend them."""
    waited_from: float | None = None
    said = 0.0
    while not stop.is_set():
        try:
            step()
        except BrokerUnavailable as exc:
            if not exc.retriable:
                raise
            now = time.monotonic()
            if waited_from is None or now - said >= KAFKA_WAIT_SAY_EVERY:
                waited_from = waited_from or now
                said = now
                log.warning("waiting for Kafka: %s; trying again every %gs (SIGTERM stops)",
                            exc, KAFKA_RETRY_SECONDS)  # fmt: skip
            stop.wait(KAFKA_RETRY_SECONDS)
            continue
        if waited_from is not None:
            log.info("Kafka answers after %.0fs of waiting", time.monotonic() - waited_from)
        return
