"""``QueueEventListener`` configured by the connector's own YAML file (``KEC_CONFIG``).

:class:`listeners.kafka.QueueEventListener` resolves its Kafka settings from
``configure()`` or the ``KAFKA_BOOTSTRAP_SERVERS`` / ``KEC_GROUP_ID`` variables; reading
the connector's file is this package's business, so the listener that also honours
``KEC_CONFIG`` is this one, the same listener with the file's reader passed in::

    from connector.queue_listener import QueueEventListener
    from listeners import wait_for_event

    # KEC_CONFIG=/etc/kec/connector.yaml in the worker's environment
    event = await wait_for_event(QueueEventListener, "events.orders", step_id="wf-1/order")

The resolution order is the listener's (docs in :mod:`listeners.kafka`): ``configure()``,
else ``KEC_CONFIG``, else the two variables.
"""

from __future__ import annotations

from pathlib import Path

from connector.config import load_config
from listeners import kafka

__all__ = ["QueueEventListener", "read_kafka_section", "resolve_settings"]


def read_kafka_section(path: Path) -> kafka.KafkaSettings:
    """The listener's settings from the connector's config file (resolution step b).

    The file is loaded as ``event-connector run`` loads it (``${VAR}`` interpolation,
    every error with its line); its ``kafka:`` section gives the servers and client
    properties (SASL, TLS...), ``listener_group_id`` the group, ``dead_letter_topic``
    where records that are not events go (the pipeline's dead-letter topic).
    """
    config = load_config(path)
    return kafka.KafkaSettings(
        config.kafka.connection(),
        config.listener_group(),
        source=f"{kafka.ENV_CONFIG}={path}",
        dead_letter_topic=config.dead_letter_topic,
    )


def resolve_settings() -> kafka.KafkaSettings:
    """The settings to use now: configure(), else KEC_CONFIG's file, else the variables."""
    return kafka.resolve_settings(read_config=read_kafka_section)


class QueueEventListener(kafka.QueueEventListener):
    """:class:`listeners.kafka.QueueEventListener` that also reads ``KEC_CONFIG``'s file."""

    def settings(self) -> kafka.KafkaSettings:
        return resolve_settings()
