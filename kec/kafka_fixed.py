"""The Kafka client settings the exactly-once guarantees rest on, and the one policy for
user properties that contradict them: refused with a :class:`~kec.errors.ConfigError`;
repeating them is fine.

Loads no Kafka client, so a configuration can refuse a contradicting property when it is
read; :mod:`kec.kafka` applies these settings to every client it builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kec.errors import ConfigError

__all__ = ["CONSUMER_FIXED", "PIPELINE_FIXED", "PRODUCER_FIXED", "fixed"]

# Settings the guarantees rest on: a property may repeat them but not change them.
PRODUCER_FIXED = {"enable.idempotence": "true", "acks": "all"}
CONSUMER_FIXED = {
    "enable.auto.commit": "false",
    "enable.auto.offset.store": "false",
    "isolation.level": "read_committed",
}
# The pipeline's consumer also needs incremental rebalances: a revoke hands over only
# the partitions that move, after their deliveries are settled.
PIPELINE_FIXED = {**CONSUMER_FIXED, "partition.assignment.strategy": "cooperative-sticky"}

_ALIASES = {"request.required.acks": "acks"}  # librdkafka's other names of a setting


def fixed(config: Mapping[str, Any], fixed: Mapping[str, str]) -> dict[str, Any]:
    """``config`` with ``fixed`` applied; a conflicting value is a ``ConfigError``."""
    for alias, name in _ALIASES.items():
        if alias in config and name in fixed:
            config = {**{k: v for k, v in config.items() if k != alias}, name: config[alias]}
    for name, value in fixed.items():
        given = config.get(name)
        allowed = {value, "-1"} if value == "all" else {value}  # acks=-1 means acks=all
        if given is not None and str(given).lower() not in allowed:
            raise ConfigError(f"property {name}={given!r} is not allowed: the client needs {value}")
    return {**config, **fixed}
