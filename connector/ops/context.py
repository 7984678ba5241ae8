"""What every operator command works with, however it was configured.

Built by :func:`connector.commands.ops_cmds.resolve` from ``-c FILE`` or from explicit
options; opening the store and building the rules happen only when a command asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module for --help: keep Kafka out of it
    from checkpoint.base import CheckpointStore
    from connector.topics import TopicPolicy
    from kec.evaluation import Evaluator


@dataclass(frozen=True)
class OpsContext:
    """What the operator commands need, from a config file or from explicit options."""

    client_config: dict[str, Any]
    group_id: str
    topics: dict[str, str]  # topic -> namespace
    store_url: str
    named_topics: tuple[str, ...] = ()  # the --topic names given on the command line
    rules: list[Any] | None = None  # connector.rules.Rule; None: no config file
    dead_letter_topic: str | None = None
    rule_names: tuple[str, ...] = ()
    topic_policy: TopicPolicy | None = None  # the file's topic_creation; None: the defaults
    source: str = ""  # how the command line reached the cluster: "-c FILE" or "--bootstrap X"
    match_limits: Any = None  # connector.trigger.MatchLimits; None: the defaults
    gateway_topic: str | None = None  # the file's http.topic: read, but not sent to unasked

    def open_store(self) -> CheckpointStore:
        from checkpoint import open_store

        return open_store(self.store_url)

    def evaluator(self) -> Evaluator:
        """The configured rules; without a config file, ``run``'s default (notify-all → log)."""
        if self.rules is None:
            from kec.evaluation import NotifyAll

            return NotifyAll("log")
        from connector.trigger import TriggerEngine

        return TriggerEngine(self.rules, limits=self.match_limits)
