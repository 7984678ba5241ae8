"""What every operator command works with, however it was configured.

Built by :func:`connector.commands.ops_cmds.resolve` from ``-c FILE`` or from explicit
options; opening the store and building the rules happen only when a command asks, with
the steps that assemble the connector (:mod:`connector.assembly`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kec.codec import MAX_EVENT_BYTES
from kec.errors import ConfigError, StoreMissing

if TYPE_CHECKING:  # the CLI imports this module for --help: keep Kafka out of it
    from checkpoint.base import CheckpointStore
    from connector.rules.limits import MatchLimits
    from connector.topics import TopicPolicy
    from kec.evaluation import Evaluator
    from kec.kafka.registry import RecordFormats
    from kec.kafka.settings import Connection


@dataclass(frozen=True)
class OpsContext:
    """What the operator commands need, from a config file or from explicit options."""

    connection: Connection | None  # None: no Kafka given (the store-only dlq commands)
    group_id: str
    topics: dict[str, str]  # topic -> namespace
    store_url: str
    named_topics: tuple[str, ...] = ()  # the --topic names given on the command line
    rules: list[Any] | None = None  # connector.rules.Rule; None: no config file
    dead_letter_topic: str | None = None
    rule_names: tuple[str, ...] = ()
    topic_policy: TopicPolicy | None = None  # the file's topic_creation; None: the defaults
    source: str = ""  # how the command line reached the cluster: "-c FILE" or "--bootstrap X"
    match_limits: MatchLimits | None = None  # None: the defaults
    # Where store_url came from, and what to change when no store is there.
    store_origin: tuple[str, str] = ("", "")
    gateway_topic: str | None = None  # the file's http.topic: read, but not sent to unasked
    # The file's topics written with a registered schema: tail and replay read them as
    # the pipeline does (or replay would evaluate other values than run did).
    formats: RecordFormats | None = None
    targets: Mapping[str, Any] = field(default_factory=dict)  # the file's target specs
    # The pipeline's limit (pipeline.max_event_bytes; run's default without a file): a
    # larger value was a dead letter, so replay refuses it too.
    max_event_bytes: int = MAX_EVENT_BYTES

    def kafka(self) -> Connection:
        """The cluster; only commands that need Kafka ask (``resolve`` made sure of it)."""
        if self.connection is None:
            raise ConfigError("this command needs Kafka: give -c FILE or --bootstrap")
        return self.connection

    @contextlib.contextmanager
    def open_store(self) -> Iterator[CheckpointStore]:
        """The store, opened; it must exist already: the tools read a connector's store,
        they never create one. A missing one is a :class:`ConfigError` naming where it
        was looked for, where that came from, and the option to give."""
        from connector.assembly import open_tool_store

        try:
            store = open_tool_store(self.store_url)
        except StoreMissing as exc:
            # A SQLite store's message names its file; a database is named here.
            where = f"{shown(self.store_url)}: " if _is_postgres(self.store_url) else ""
            origin, advice = self.store_origin
            raise ConfigError(f"{where}{exc} ({origin}): {advice}") from exc
        try:
            yield store
        finally:
            store.close()

    def evaluator(self) -> Evaluator:
        """The configured rules; without a config file, ``run``'s default (notify-all → log)."""
        from connector.assembly import build_evaluator

        return build_evaluator(self.rules, self.match_limits)


def shown(url: str) -> str:
    """A store URL fit to print: a PostgreSQL URL without its password and parameters."""
    if not _is_postgres(url):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def _is_postgres(url: str) -> bool:
    return url.partition("://")[0].lower() in ("postgresql", "postgres")
