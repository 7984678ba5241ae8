"""The ``kafka`` target: actions produced to an actions topic by an idempotent producer.

Each action becomes one record: key = the action's ``event_key`` (so one key's actions
stay in order on one partition), value = ``Action.to_json()``, headers ``action-id`` (the
idempotency key) and ``content-type: application/json``.

A batch is produced whole, then flushed for at most ``flush_timeout`` seconds. Only failed
records are reported (``delivery.report.only.error``: a report per acknowledged record
cost a message object and a Python call each), to one callback of the producer, which
tells the record by its value (records of one call with equal values, which only a
``template`` can make, are all taken as reported): once the flush has emptied the queue,
every record without a failure report was acknowledged (``acks=all``) and its action is
delivered; a failed one is a retriable :class:`~kec.errors.TargetError` for its action,
and when the flush times out with records still queued, every action not reported
acknowledged is one too (resent under the same id). ``message.timeout.ms`` defaults to
the flush timeout so librdkafka gives up on a record about when we stop waiting for it.
A record reported as failed may still have been written (a lost acknowledgement): the
resend then duplicates it with the same ``action-id``, which consumers deduplicate on.

Order: the producer is idempotent (``enable.idempotence=true`` with ``acks=all``), so its
internal retries neither duplicate nor reorder records within a partition. A record that
fails for good (say its ``message.timeout.ms`` passed) can still leave a gap that a later
record of the same key fills first; the failed action is then resent after it. Set
``enable.gapless.guarantee: true`` in ``properties`` to have librdkafka treat such a gap as
fatal instead (the target then recreates its producer).

When ``produce()`` refuses a record for a passing reason (a full queue) the rest of the
batch is not produced and fails with it, as in the base contract; a record too large for
``message.max.bytes`` is :class:`~kec.errors.TargetRejected` and the rest of the
batch goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from connector.common.redaction import is_secret_name, redact
from connector.common.template import Template
from connector.targets.base import Target
from kec import kafka
from kec.action import Action
from kec.errors import ConfigError, TargetError, TargetRejected
from kec.kafka import KafkaError, KafkaException, Message, Producer, error_of, is_fatal, rejected

log = logging.getLogger(__name__)

_CONTENT_JSON: tuple[str, str | bytes | None] = ("content-type", b"application/json")


class KafkaTarget(Target):
    """Produces actions to ``topic``; ``properties`` are extra librdkafka settings."""

    def __init__(
        self,
        name: str = "kafka",
        topic: str = "",
        bootstrap_servers: str = "",
        *,
        properties: Mapping[str, Any] | None = None,
        flush_timeout: float = 30.0,
        template: Template | None = None,
    ) -> None:
        """``template``: the record value to write instead of the action
        (:mod:`connector.common.template`)."""
        if not topic:
            raise ConfigError(f"kafka target {name!r}: topic is required")
        if not bootstrap_servers:
            raise ConfigError(f"kafka target {name!r}: bootstrap_servers is required")
        if flush_timeout <= 0:
            raise ConfigError(f"kafka target {name!r}: flush_timeout must be positive")
        try:  # the settings that make the target what it promises (kec.kafka)
            kafka.fixed(properties or {}, kafka.PRODUCER_FIXED)
        except ConfigError as exc:
            raise ConfigError(f"kafka target {name!r}: {exc}") from exc
        self.name = name
        # The idempotent producer keeps the order of a partition's records: a call may
        # hold several actions of one lane; one call at a time, as flush() waits for all.
        self.batch_size = 2000
        self.ordered = True
        self._topic = topic
        self._template = template
        self._flush_timeout = flush_timeout
        self._conf: dict[str, Any] = {
            "client.id": f"kafka-event-connector-{name}",
            "message.timeout.ms": int(flush_timeout * 1000),
            # Reports of failures only (see above); a property may ask for every report.
            "delivery.report.only.error": True,
            **(properties or {}),
            "bootstrap.servers": bootstrap_servers,
            # One callback for every record: one given to each produce() cost a message
            # state and a closure per record, about 0.8 us, for reports that seldom come.
            "on_delivery": self._reported,
        }
        # A librdkafka error may quote a property's value: these never reach a message.
        self._secrets = [
            str(v) for k, v in (properties or {}).items() if is_secret_name(k) and v is not None
        ]
        self._producer: Producer | None = None
        self._fatal = False
        # The current call's failure reports: (the record's value, the error).
        self._failed: list[tuple[bytes | None, KafkaError]] = []

    def open(self) -> None:
        if self._producer is not None:
            return
        try:
            self._producer = kafka.producer(self._conf)
        except ConfigError as exc:
            raise ConfigError(
                f"kafka target {self.name!r}: {redact(str(exc), self._secrets)}"
            ) from exc
        self._fatal = False

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        # Bounded: whatever is still queued stays pending in the outbox and is resent.
        left = kafka.close_producer(producer, self._flush_timeout)
        if left:
            log.warning("kafka target %s: dropped %d unacknowledged record(s)", self.name, left)

    def deliver(self, action: Action) -> None:
        failure = self.deliver_many([action]).get(action.action_id)
        if failure is not None:
            raise failure

    def deliver_many(self, actions: Sequence[Action]) -> dict[str, BaseException]:
        if self._fatal:
            # An idempotent producer that hit a fatal error refuses everything: start anew.
            log.warning("kafka target %s: producer failed fatally, recreating it", self.name)
            self.close()
            self.open()
        producer = self._producer
        if producer is None:
            error = TargetError(f"kafka target {self.name} is not open")
            return {a.action_id: error for a in actions}
        # A report names its record by value (a delivery report's message carries no
        # headers). A late one of an earlier, timed-out call lands here and matches no
        # record of this call, unless this call resends that record: it is then resent
        # once more under the same action-id, which consumers deduplicate on.
        failed = self._failed = []
        failures: dict[str, BaseException] = {}
        topic, template, produce = self._topic, self._template, producer.produce
        # Inlined, one record per action: this loop is the target's whole cost per action.
        # A value is not kept: a failure report (rare) is matched by writing it again.
        for i, action in enumerate(actions):
            value = template.render_bytes(action) if template else action.to_json_bytes()
            key = action.event_key.encode()
            headers = [("action-id", action.action_id.encode()), _CONTENT_JSON]
            try:
                try:
                    # The record's arguments given directly: a dict unpacked into keywords
                    # cost about half a microsecond a record.
                    produce(topic, value, key, headers=headers)
                except BufferError:
                    # The local queue is full: wait for room (bounded), then try once more.
                    producer.flush(self._flush_timeout)
                    produce(topic, value, key, headers=headers)
            except (BufferError, KafkaException) as exc:
                if rejected(exc):
                    # This action can never be produced; it does not hold up the others.
                    failures[action.action_id] = self._error(action, exc, TargetRejected)
                    continue
                cause = error_of(exc)
                if cause is not None and is_fatal(cause):
                    self._fatal = True
                error = self._error(action, exc, TargetError)
                failures.update((a.action_id, error) for a in actions[i:])
                break
        left = producer.flush(self._flush_timeout)
        if not failed and not left:  # the common case: every record acknowledged
            return failures
        produced = [a for a in actions if a.action_id not in failures]
        reports: dict[str, KafkaError] = {}
        if failed:
            by_value: dict[bytes, list[Action]] = {}
            for action in produced:  # the same bytes as produced: a value is deterministic
                by_value.setdefault(self._value(action), []).append(action)
            for sent, why in failed:  # records of equal values all count as the reported one
                for action in by_value.get(sent or b"", ()):
                    reports[action.action_id] = why
        for action in produced:
            if (err := reports.get(action.action_id)) is not None:
                failures[action.action_id] = TargetError(
                    f"kafka target {self.name}: delivery to {self._topic} failed"
                    f" (action {action.action_id}): {err.str()}"
                )
            elif left:
                # No report: acknowledged once the queue is empty; with records still
                # queued, which were acknowledged is not known, so each is resent.
                failures[action.action_id] = TargetError(
                    f"kafka target {self.name}: no acknowledgement from {self._topic}"
                    f" within {self._flush_timeout:g}s (action {action.action_id};"
                    f" {left} record(s) still queued)"
                )
        return failures

    def _reported(self, err: KafkaError | None, msg: Message) -> None:
        """The producer's delivery callback, run by flush() in the calling thread."""
        if err is None:  # a property asked for every report
            return
        if is_fatal(err):
            self._fatal = True
        self._failed.append((msg.value(), err))

    def _error(self, action: Action, exc: Exception, kind: type[TargetError]) -> TargetError:
        error = kind(
            f"kafka target {self.name}: cannot produce to {self._topic}"
            f" (action {action.action_id}): {redact(str(exc), self._secrets)}"
        )
        error.__cause__ = exc
        return error

    def _value(self, action: Action) -> bytes:
        """The value ``deliver_many`` produces for ``action``."""
        return self._template.render_bytes(action) if self._template else action.to_json_bytes()
