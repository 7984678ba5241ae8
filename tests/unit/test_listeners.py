"""The listener contract and the Kafka listener's configuration, without a broker."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_STORED

from connector.queue_listener import QueueEventListener as FileQueueEventListener
from connector.queue_listener import resolve_settings as file_settings
from kec.errors import ConfigError
from kec.event import Event
from kec.kafka import Connection
from listeners import kafka
from listeners.base import EventListener
from listeners.kafka import KafkaSettings, QueueEventListener, configure, resolve_settings


@pytest.fixture(autouse=True)
def clean_configuration(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (kafka.ENV_CONFIG, kafka.ENV_BOOTSTRAP, kafka.ENV_GROUP):
        monkeypatch.delenv(name, raising=False)
    kafka.reset_configuration()
    yield
    kafka.reset_configuration()


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "connector.yaml"
    path.write_text(textwrap.dedent(body))
    return path


# -- EventListener -------------------------------------------------------------------


class OneShot(EventListener):
    async def poll_for_event(self, key: str) -> Event:
        return Event(key=key, value="fired")


async def test_listener_needs_only_poll_and_checkpointed_defaults_to_no_op() -> None:
    listener = OneShot()
    event = await listener.poll_for_event("k")
    assert (event.key, event.value) == ("k", "fired")
    await listener.event_checkpointed(event)  # the default: nothing to commit, no error


def test_listener_without_poll_cannot_be_built() -> None:
    class Incomplete(EventListener):
        pass

    with pytest.raises(TypeError, match="poll_for_event"):
        Incomplete()  # type: ignore[abstract]


async def test_checkpointing_an_event_that_did_not_come_from_kafka_is_refused() -> None:
    with pytest.raises(ValueError, match="no Kafka topic/partition/offset"):
        await QueueEventListener().event_checkpointed(Event(key="k", value="v"))


# -- configuration: resolution order -------------------------------------------------


def test_nothing_configured_says_what_to_set() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings()
    for hint in ("configure(", "KEC_CONFIG", "KAFKA_BOOTSTRAP_SERVERS", "KEC_GROUP_ID"):
        assert hint in str(info.value)


def test_bootstrap_without_group_asks_for_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kafka.ENV_BOOTSTRAP, "b:9092")
    with pytest.raises(ConfigError, match="KEC_GROUP_ID"):
        resolve_settings()


def test_a_config_file_is_the_connectors_to_read_never_skipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(tmp_path, "kafka: {bootstrap_servers: b:1}\nnamespaces: {d: {}}\n")
    monkeypatch.setenv(kafka.ENV_CONFIG, str(path))
    monkeypatch.setenv(kafka.ENV_BOOTSTRAP, "env:9092")  # never a silent fallback
    monkeypatch.setenv(kafka.ENV_GROUP, "from-env")
    with pytest.raises(ConfigError, match=r"use connector\.queue_listener\.QueueEventListener"):
        QueueEventListener().settings()
    # The connector's listener is the same one, reading the file.
    assert issubclass(FileQueueEventListener, QueueEventListener)
    assert FileQueueEventListener().settings().group_id == "event-connector-listener"


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kafka.ENV_BOOTSTRAP, "b1:9092,b2:9092")
    monkeypatch.setenv(kafka.ENV_GROUP, "listeners")
    settings = resolve_settings()
    assert (settings.bootstrap_servers, settings.group_id) == ("b1:9092,b2:9092", "listeners")


def test_each_source_names_the_dead_letter_topic(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(kafka.ENV_BOOTSTRAP, "b:1")
    monkeypatch.setenv(kafka.ENV_GROUP, "g")
    assert resolve_settings().dead_letter_topic is None  # then poison raises DecodeError
    monkeypatch.setenv(kafka.ENV_DEAD_LETTER_TOPIC, "env-dlq")
    assert resolve_settings().dead_letter_topic == "env-dlq"
    body = "kafka: {bootstrap_servers: b:1}\nnamespaces: {default: {}}\n"
    monkeypatch.setenv(kafka.ENV_CONFIG, str(write_config(tmp_path, body)))
    assert file_settings().dead_letter_topic is None  # the file wins, and names none
    write_config(tmp_path, body + "dead_letter_topic: file-dlq\n")
    assert file_settings().dead_letter_topic == "file-dlq"
    configure(bootstrap_servers="c:1", group_id="c", dead_letter_topic="call-dlq")
    try:
        assert file_settings().dead_letter_topic == "call-dlq"
        with pytest.raises(ConfigError, match="dead_letter_topic must be a non-empty string"):
            configure(bootstrap_servers="c:1", group_id="c", dead_letter_topic=" ")
    finally:
        kafka.reset_configuration()


def test_config_file_beats_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(
        tmp_path,
        """
        kafka:
          bootstrap_servers: k1:9092,k2:9092
          security_protocol: SASL_SSL
          sasl_mechanism: PLAIN
          sasl_username: me
          sasl_password: ${KAFKA_PASSWORD}
          properties:
            auto.offset.reset: latest
        group_id: connector
        namespaces: {default: {}}
        """,
    )
    monkeypatch.setenv(kafka.ENV_CONFIG, str(path))
    monkeypatch.setenv(kafka.ENV_BOOTSTRAP, "env:9092")
    monkeypatch.setenv(kafka.ENV_GROUP, "from-env")
    monkeypatch.setenv("KAFKA_PASSWORD", "s3cret")
    settings = file_settings()
    # The listener's group is its own, derived from the connector's, never the same.
    assert (settings.bootstrap_servers, settings.group_id) == (
        "k1:9092,k2:9092",
        "connector-listener",
    )
    conf = settings.consumer_config()
    assert (conf["security.protocol"], conf["sasl.password"]) == ("SASL_SSL", "s3cret")
    assert conf["auto.offset.reset"] == "latest"
    assert settings.start_offset() == OFFSET_END


def test_config_file_names_the_listener_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    body = "kafka: {bootstrap_servers: b:1}\nnamespaces: {default: {}}\n"
    path = write_config(tmp_path, body + "listener_group_id: ray-listeners\n")
    monkeypatch.setenv(kafka.ENV_CONFIG, str(path))
    assert file_settings().group_id == "ray-listeners"
    write_config(tmp_path, body + "group_id: same\nlistener_group_id: same\n")
    with pytest.raises(ConfigError, match=r"connector.yaml:4 listener_group_id: must differ"):
        file_settings()


def test_a_broken_config_file_is_refused_with_its_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_config(tmp_path, "kafka: {bootstrap_servers: b:1, group_id: g}\n")
    monkeypatch.setenv(kafka.ENV_CONFIG, str(path))
    with pytest.raises(ConfigError) as info:
        file_settings()
    assert (
        f"{path}:1 kafka.group_id: unknown key `group_id` here: it is a key of the top level"
        in str(info.value)
    )


def test_configure_beats_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "kafka: {bootstrap_servers: f:1}\ngroup_id: f\nnamespaces: {default: {}}\n"
    )
    monkeypatch.setenv(kafka.ENV_CONFIG, str(path))
    monkeypatch.setenv(kafka.ENV_BOOTSTRAP, "env:9092")
    monkeypatch.setenv(kafka.ENV_GROUP, "from-env")
    configure(bootstrap_servers="c:9092", group_id="from-call", **{"client.id": "me"})
    settings = file_settings()
    assert (settings.bootstrap_servers, settings.group_id) == ("c:9092", "from-call")
    assert settings.consumer_config()["client.id"] == "me"
    kafka.reset_configuration()
    assert file_settings().group_id == "f-listener"


def test_consumer_config_always_has_the_exactly_once_settings() -> None:
    conf = KafkaSettings(Connection("b:9092"), "g").consumer_config()
    assert conf["enable.auto.commit"] == "false"
    assert conf["enable.auto.offset.store"] == "false"
    assert conf["isolation.level"] == "read_committed"
    assert (conf["bootstrap.servers"], conf["group.id"]) == ("b:9092", "g")
    assert conf["auto.offset.reset"] == "earliest"


@pytest.mark.parametrize(
    ("reset", "start"),
    [("earliest", OFFSET_BEGINNING), ("smallest", OFFSET_BEGINNING), ("latest", OFFSET_END),
     ("error", OFFSET_STORED)],
)  # fmt: skip
def test_start_offset_follows_auto_offset_reset(reset: str, start: int) -> None:
    settings = KafkaSettings(Connection("b:1", {"auto.offset.reset": reset}), "g")
    assert settings.start_offset() == start


# -- configuration: refusals ---------------------------------------------------------


@pytest.mark.parametrize(
    "properties",
    [{"enable.auto.commit": True}, {"enable.auto.offset.store": "true"},
     {"isolation.level": "read_uncommitted"}],
)  # fmt: skip
def test_properties_that_break_exactly_once_are_refused(properties: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="would break exactly-once"):
        configure(bootstrap_servers="b:1", group_id="g", **properties)


def test_properties_repeating_the_fixed_values_are_accepted() -> None:
    settings = configure(
        bootstrap_servers="b:1",
        group_id="g",
        **{"enable.auto.commit": "false", "isolation.level": "READ_COMMITTED"},
    )
    assert settings.consumer_config()["enable.auto.commit"] == "false"


def test_servers_and_group_are_not_properties() -> None:
    with pytest.raises(ConfigError, match="set group_id"):
        configure(bootstrap_servers="b:1", group_id="g", **{"group.id": "other"})


def test_empty_group_is_refused() -> None:
    with pytest.raises(ConfigError, match="group_id must be a non-empty string"):
        configure(bootstrap_servers="b:1", group_id=" ")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("namespaces: {default: {}}\n", ":1 kafka: field required"),
        ("kafka: [1, 2]\nnamespaces: {default: {}}\n", ":1 kafka: input should be"),
        ("kafka: {sasl_username: u}\nnamespaces: {a: {}}\n", "kafka.bootstrap_servers: field"),
        ("kafka: {bootstrap_servers: [b:1\n", ":2 (yaml)"),
        ("kafka: {bootstrap_servers: b:1, properties: {group.id: x}}\nnamespaces: {d: {}}\n",
         "set group_id, not property 'group.id'"),
    ],
)  # fmt: skip
def test_bad_config_file_names_the_file_and_field(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, body: str, reason: str
) -> None:
    path = write_config(tmp_path, body)
    monkeypatch.setenv(kafka.ENV_CONFIG, str(path))
    with pytest.raises(ConfigError) as info:
        file_settings()
    assert str(path) in str(info.value) and reason in str(info.value)


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(kafka.ENV_CONFIG, str(tmp_path / "absent.yaml"))
    monkeypatch.setenv(kafka.ENV_BOOTSTRAP, "env:9092")  # never a silent fallback
    monkeypatch.setenv(kafka.ENV_GROUP, "from-env")
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read"):
        file_settings()


def test_wait_for_event_is_offered_next_to_the_listeners() -> None:
    import listeners
    from listeners import durable

    assert listeners.wait_for_event is durable.wait_for_event
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = listeners.nope  # type: ignore[attr-defined]
