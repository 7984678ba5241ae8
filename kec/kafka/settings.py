"""What a Kafka client is given, as plain data: where the cluster is and how to talk to it
(:class:`Connection`), and the settings the exactly-once guarantees rest on, with the one
policy for user properties that contradict them: refused with a
:class:`~kec.errors.ConfigError`; repeating them is fine.

Loads no Kafka client, so a configuration can build a connection and refuse a
contradicting property when it is read; :mod:`kec.kafka.clients` applies these settings
to every client it builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kec.errors import ConfigError

__all__ = ["BOOTSTRAP", "CONSUMER_FIXED", "PIPELINE_FIXED", "PRODUCER_FIXED", "Connection", "fixed"]

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


BOOTSTRAP = "bootstrap.servers"


@dataclass(frozen=True, slots=True)
class Connection:
    """How to reach one Kafka cluster: its bootstrap servers and every other librdkafka
    property its clients share (``security.protocol``, SASL, SSL, ``client.rack``...),
    secrets revealed.

    The one shape of a connection for the connector, the listeners, the notification
    client and the tools; a client's own settings (a group id, timeouts) are added where
    the client is built. Its ``repr`` names the properties, never their values.
    """

    bootstrap_servers: str
    properties: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.bootstrap_servers, str) or not self.bootstrap_servers.strip():
            raise ConfigError("a Kafka connection needs bootstrap servers (HOST:PORT[,...])")
        if BOOTSTRAP in self.properties:
            raise ConfigError(f"give {BOOTSTRAP} as bootstrap_servers, not as a property")
        # A copy: the caller's dict changing later does not change the connection.
        object.__setattr__(self, "properties", dict(self.properties))

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Connection:
        """The connection a librdkafka property mapping describes (``bootstrap.servers``
        included); a mapping without servers is a ``ConfigError``."""
        rest = dict(config)
        servers = rest.pop(BOOTSTRAP, None)
        if not servers:
            raise ConfigError(f"the Kafka client properties name no {BOOTSTRAP}")
        return cls(str(servers), rest)

    def with_properties(self, more: Mapping[str, Any]) -> Connection:
        """This connection with ``more`` properties (they win over its own)."""
        return Connection(self.bootstrap_servers, {**self.properties, **more})

    def client_config(self) -> dict[str, Any]:
        """Every property, ``bootstrap.servers`` included: hand it to a client, never log it."""
        return {**self.properties, BOOTSTRAP: self.bootstrap_servers}

    def __repr__(self) -> str:
        return f"Connection({self.bootstrap_servers!r}, properties={sorted(self.properties)})"

    def principal(self) -> str:
        """Who the cluster sees, for messages about ACLs: ``User:NAME (kafka.sasl_username)``
        with SASL, the client certificate with mutual TLS."""
        user = self.properties.get("sasl.username")
        if user:
            return f"User:{user} (kafka.sasl_username)"
        if self.properties.get("ssl.certificate.location"):
            return "the principal of the client certificate (kafka.ssl_certificate_location)"
        return "the connector's principal (ANONYMOUS without SASL or a client certificate)"
