"""The action targets against real counterparts: an HTTP server, the broker, processes.

No mocks: the webhook talks to a local ``http.server`` run by the test, the kafka target to
the session broker (read back with a consumer), the command target runs real processes and
the python target imports a real module. The last tests run the outbox dispatcher against
the webhook target and a memory store.
"""

from __future__ import annotations

import email.utils
import json
import re
import shlex
import socket
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from checkpoint import open_store
from checkpoint.base import ActionState, CheckpointStore
from connector.common.retry import RetryPolicy
from connector.common.template import Template
from connector.dispatch import Dispatcher
from connector.targets import (
    CommandTarget,
    KafkaTarget,
    LogTarget,
    PythonTarget,
    WebhookTarget,
    build_target,
)
from kec.action import Action, ActionKind
from kec.errors import ConfigError, TargetError, TargetRejected
from tests.integration import target_helpers
from tests.integration.http_recorder import RecordingServer, Reply, serving
from tests.store_helpers import seed
from tests.support import wait_for


def make_action(i: int = 0, key: str = "order-1", *, target: str = "hook") -> Action:
    return Action(
        rule="start-task2",
        kind=ActionKind.START_TASK,
        target=target,
        namespace="default",
        event_ids=(f"ev-{key}-{i}",),
        event_key=key,
        workflow="wf",
        task="task2",
        context="run-7",
        payload={"i": i},
    )


# -- a real HTTP server ------------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[RecordingServer]:
    with serving() as server:
        yield server


@pytest.fixture
def webhook(http_server: RecordingServer) -> Iterator[WebhookTarget]:
    # One request at a time: these tests give the server its answers in order.
    target = WebhookTarget(
        "hook", http_server.url, headers={"Authorization": "Bearer t0k3n"}, concurrency=1
    )
    target.open()
    yield target
    target.close()


# -- webhook -----------------------------------------------------------------------------


def test_webhook_posts_the_action_with_its_idempotency_key(
    http_server: RecordingServer, webhook: WebhookTarget
) -> None:
    action = make_action()
    webhook.deliver(action)

    [request] = http_server.requests
    assert request.path == "/actions"
    assert request.headers["idempotency-key"] == action.action_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer t0k3n"
    assert Action.from_json(request.body) == action
    assert request.body == action.to_json().encode()


def test_webhook_resend_carries_the_same_idempotency_key(
    http_server: RecordingServer, webhook: WebhookTarget
) -> None:
    action = make_action()
    again = Action.from_json(action.to_json())  # as re-read from the outbox after a crash
    assert webhook.deliver_many([action, make_action(1)]) == {}
    webhook.deliver(again)

    keys = [r.headers["idempotency-key"] for r in http_server.requests]
    assert keys == [action.action_id, make_action(1).action_id, action.action_id]
    assert http_server.requests[0].body == http_server.requests[2].body


@pytest.mark.parametrize("status", [201, 202, 204])
def test_webhook_any_2xx_is_delivered(
    http_server: RecordingServer, webhook: WebhookTarget, status: int
) -> None:
    http_server.answer(Reply(status))
    webhook.deliver(make_action())
    assert len(http_server.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_webhook_5xx_and_408_are_retriable(
    http_server: RecordingServer, webhook: WebhookTarget, status: int
) -> None:
    http_server.answer(Reply(status, body=b"engine restarting"))
    action = make_action()
    with pytest.raises(TargetError) as caught:
        webhook.deliver(action)
    assert type(caught.value) is TargetError
    assert caught.value.retriable
    assert str(status) in str(caught.value)
    assert action.action_id in str(caught.value)
    assert "engine restarting" in str(caught.value)


@pytest.mark.parametrize(
    ("retry_after", "quoted"),
    [
        ("7", r"Retry-After: 7s"),
        (
            email.utils.format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True),
            r"Retry-After: \d+(\.\d+)?s",
        ),
        ("soon", r"Retry-After: soon"),
    ],
)
def test_webhook_429_is_retriable_and_quotes_retry_after(
    http_server: RecordingServer, webhook: WebhookTarget, retry_after: str, quoted: str
) -> None:
    http_server.answer(Reply(429, {"Retry-After": retry_after}))
    with pytest.raises(TargetError) as caught:
        webhook.deliver(make_action())
    assert caught.value.retriable
    assert "429" in str(caught.value)
    assert re.search(quoted, str(caught.value))


def test_webhook_errors_do_not_quote_credentials(http_server: RecordingServer) -> None:
    url = http_server.url.replace("http://", "http://user:s3cret@") + "?token=s3cret"
    http_server.answer(Reply(503))
    with WebhookTarget("hook", url) as target, pytest.raises(TargetError) as caught:
        target.deliver(make_action())
    assert "s3cret" not in str(caught.value)
    assert http_server.requests[0].headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize("status", [409, 425])
def test_webhook_409_in_progress_and_425_too_early_are_retriable(
    http_server: RecordingServer, webhook: WebhookTarget, status: int
) -> None:
    # 409 from a receiver that honours Idempotency-Key: a request with this key is still
    # being processed. Not a refusal: the action is sent again, with the same key.
    http_server.answer(Reply(status, {"Retry-After": "2"}, b'{"error":"in progress"}'))
    action = make_action()
    with pytest.raises(TargetError) as caught:
        webhook.deliver(action)
    assert type(caught.value) is TargetError
    assert caught.value.retriable
    assert f"answered {status}" in str(caught.value)
    assert "Retry-After: 2s" in str(caught.value)
    if status == 409:
        assert "in progress" in str(caught.value)
    webhook.deliver(action)  # the next attempt, once the first request is done
    keys = {r.headers["idempotency-key"] for r in http_server.requests}
    assert keys == {action.action_id}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 301])
def test_webhook_other_4xx_and_3xx_are_rejected_for_good(
    http_server: RecordingServer, webhook: WebhookTarget, status: int
) -> None:
    http_server.answer(Reply(status, {"Location": "/elsewhere"}, b'{"error":"no such task"}'))
    with pytest.raises(TargetRejected) as caught:
        webhook.deliver(make_action())
    assert not caught.value.retriable
    assert str(status) in str(caught.value)
    assert len(http_server.requests) == 1  # a redirect is not followed


HOOK_SECRET = "XXXXSECRET0b5e"
SIG_SECRET = "SIGSECRET77c2"
USER_PASSWORD = "pw-9f1a"


def _secret_hook(port: int) -> str:
    """A URL that carries secrets the way hosted webhooks do: in userinfo, path, query."""
    return (
        f"http://hookuser:{USER_PASSWORD}@127.0.0.1:{port}/services/T000/B000/{HOOK_SECRET}"
        f"?sig={SIG_SECRET}&mode=fast"
    )


def _assert_no_secret(text: str) -> None:
    for secret in (HOOK_SECRET, SIG_SECRET, USER_PASSWORD, "/services/T000"):
        assert secret not in text, text


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        # A receiver that echoes the request line in its error body.
        (Reply(404, body=f"no hook at /services/T000/B000/{HOOK_SECRET}".encode()), "404"),
        (Reply(503, body=f"sig={SIG_SECRET} is being rotated".encode()), "503"),
        (
            Reply(301, {"Location": f"https://new.example/services/T000/B000/{HOOK_SECRET}"}),
            "Location: https://new.example/…",
        ),
    ],
)
def test_webhook_errors_hide_the_secrets_of_the_url(
    http_server: RecordingServer, reply: Reply, says: str
) -> None:
    port = int(http_server.url.split(":")[2].split("/")[0])
    http_server.answer(reply)
    with WebhookTarget("hook", _secret_hook(port)) as target, pytest.raises(TargetError) as caught:
        target.deliver(make_action())
    text = str(caught.value)
    _assert_no_secret(text)
    assert f"POST http://127.0.0.1:{port}/…?sig=…&mode=… answered" in text
    assert says in text
    # The secrets still reach the receiver: only what is printed is redacted.
    [request] = http_server.requests
    assert request.path == f"/services/T000/B000/{HOOK_SECRET}?sig={SIG_SECRET}&mode=fast"


def test_webhook_transport_and_config_errors_hide_the_secrets_of_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with (
            WebhookTarget("down", _secret_hook(port)) as target,
            pytest.raises(TargetError) as caught,
        ):
            target.deliver(make_action())
    _assert_no_secret(str(caught.value))
    assert f"http://127.0.0.1:{port}/…" in str(caught.value)
    wrong_scheme = _secret_hook(port).replace("http://", "ftp://")
    wrong_port = _secret_hook(port).replace(f":{port}/", ":99999/")
    for bad in (wrong_scheme, wrong_port):
        with pytest.raises(ConfigError) as config_error:
            WebhookTarget("w", bad)
        _assert_no_secret(str(config_error.value))
        assert "127.0.0.1" in str(config_error.value)


class _Flood(BaseHTTPRequestHandler):
    """Answers with a body far larger than the test lets it send: the declared length,
    the first MiB, then nothing until released. A client that reads it all never ends."""

    server: _FloodServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen += 1
        if self.server.seen > 1:  # the next request: a plain answer
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(256 * 1024 * 1024))
        self.end_headers()
        try:
            self.wfile.write(b"engine overloaded " + b"x" * 1024 * 1024)
            self.wfile.flush()
        except ConnectionError:
            return
        self.server.released.wait(30)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FloodServer(ThreadingHTTPServer):
    daemon_threads = False

    def __init__(self, status: int) -> None:
        super().__init__(("127.0.0.1", 0), _Flood)
        self.status = status
        self.seen = 0
        self.released = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hung up on the flood: expected


@pytest.mark.parametrize("status", [200, 500])
def test_webhook_reads_a_bounded_part_of_a_huge_answer(status: int) -> None:
    server = _FloodServer(status)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/actions"
    try:
        # Reading the whole body would wait for bytes that never come: a ReadTimeout.
        with WebhookTarget("hook", url, timeout=5, concurrency=1) as target:
            if status == 200:
                target.deliver(make_action())
            else:
                with pytest.raises(TargetError) as caught:
                    target.deliver(make_action())
                text = str(caught.value)
                assert "answered 500" in text and "ReadTimeout" not in text
                assert "body: engine overloaded xxx" in text
                assert len(text) < 1000  # a bounded quote of the body
            target.deliver(make_action(1))  # the cut connection was replaced
        assert server.seen == 2
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join()


def test_webhook_timeout_is_retriable(http_server: RecordingServer) -> None:
    released = threading.Event()
    http_server.answer(Reply(200, hold=released))
    try:
        with (
            WebhookTarget("slow", http_server.url, timeout=0.3) as target,
            pytest.raises(TargetError) as caught,
        ):
            target.deliver(make_action())
    finally:
        released.set()
    assert caught.value.retriable
    assert "ReadTimeout" in str(caught.value)
    assert len(http_server.requests) == 1


def test_webhook_refused_connection_is_retriable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with (
            WebhookTarget("down", f"http://127.0.0.1:{port}/") as target,
            pytest.raises(TargetError) as caught,
        ):
            target.deliver(make_action())
    assert caught.value.retriable
    assert "ConnectError" in str(caught.value)


def test_webhook_config_errors_and_open_close() -> None:
    with pytest.raises(ConfigError, match="url"):
        WebhookTarget("w", "ftp://example.org/")
    with pytest.raises(ConfigError, match="Idempotency-Key"):
        WebhookTarget("w", "http://example.org/", headers={"Idempotency-Key": "mine"})
    target = WebhookTarget("w", "http://example.org/")
    with pytest.raises(TargetError, match="not open"):
        target.deliver(make_action())
    target.open()
    target.open()
    target.close()
    target.close()


# -- kafka -------------------------------------------------------------------------------


def _read(bootstrap: str, topic: str, partitions: int, count: int) -> list[Message]:
    # assign() rather than subscribe(): no group rebalance to wait for.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    got: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])

        def more() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                got.append(msg)
            return len(got) >= count

        wait_for(more, timeout=60, interval=0, what=f"{count} records on {topic}")
    finally:
        consumer.close()
    return got


def test_kafka_target_produces_keyed_records_with_action_id_in_order(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(3)
    keys = ["order-1", "order-2", "order-3", "order-4"]
    actions = [make_action(i, keys[i % len(keys)]) for i in range(40)]
    with KafkaTarget("actions", topic, bootstrap, flush_timeout=30) as target:
        assert target.deliver_many(actions[:30]) == {}
        target.deliver(actions[30])
        assert target.deliver_many(actions[31:]) == {}

    records = _read(bootstrap, topic, 3, len(actions))
    assert len(records) == len(actions)
    per_key: dict[str, list[Action]] = defaultdict(list)
    for msg in records:
        value = msg.value()
        assert value is not None
        action = Action.from_json(value)
        headers = dict(msg.headers() or [])
        assert headers["action-id"] == action.action_id.encode()
        assert headers["content-type"] == b"application/json"
        assert msg.key() == action.event_key.encode()
        per_key[action.event_key].append(action)
    for key in keys:
        assert per_key[key] == [a for a in actions if a.event_key == key], f"order of {key}"


def test_templates_shape_the_webhook_body_and_the_kafka_record(
    http_server: RecordingServer, bootstrap: str, new_topic: Callable[..., str]
) -> None:
    """Built from the config's settings, as run builds them: the receiver gets the shape
    it asked for, with the idempotency key still in its header."""
    spec = {"order": "{{ payload.i }}", "run": "{{ context }}", "id": "{{ action_id }}"}
    action = make_action(3)
    hook = build_target("hook", {"type": "webhook", "url": http_server.url, "template": spec})
    hook.open()
    try:
        hook.deliver(action)
    finally:
        hook.close()
    [request] = http_server.requests
    assert json.loads(request.body) == {"order": 3, "run": "run-7", "id": action.action_id}
    assert request.headers["idempotency-key"] == action.action_id
    topic = new_topic(1)
    kafka_spec = {"type": "kafka", "topic": topic, "bootstrap_servers": bootstrap,
                  "template": spec}  # fmt: skip
    with build_target("actions", kafka_spec) as target:
        assert target.deliver_many([action]) == {}
    (record,) = _read(bootstrap, topic, 1, 1)
    assert json.loads(record.value() or b"") == {"order": 3, "run": "run-7", "id": action.action_id}
    assert dict(record.headers() or [])["action-id"] == action.action_id.encode()


def test_kafka_target_rejects_an_oversized_action_and_delivers_the_rest(
    bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(1)
    small = make_action(0)
    big = Action.from_dict({**make_action(1).to_dict(), "payload": {"blob": "x" * 5000}})
    after = make_action(2)
    props = {"message.max.bytes": 4096}
    with KafkaTarget("actions", topic, bootstrap, properties=props) as target:
        failures = target.deliver_many([small, big, after])
    assert set(failures) == {big.action_id}
    assert isinstance(failures[big.action_id], TargetRejected)
    assert "MSG_SIZE_TOO_LARGE" in str(failures[big.action_id])
    values = [m.value() for m in _read(bootstrap, topic, 1, 2)]
    assert values == [small.to_json().encode(), after.to_json().encode()]


@pytest.mark.parametrize("shaped", [False, True], ids=["action", "template"])
def test_kafka_target_delivers_exactly_what_the_broker_acknowledged(
    bootstrap: str, admin: AdminClient, shaped: bool
) -> None:
    """Only failures are reported: an action counts as delivered when the flush emptied
    the queue without a failure report for its record. The broker refuses the records
    over the topic's max.message.bytes (and whatever shared their produce request): what
    deliver_many calls delivered is exactly what the topic holds. A report is matched to
    its action by the value, written again: the action's JSON or a template's."""
    topic = f"small-{uuid.uuid4().hex[:12]}"
    config = {"retention.ms": "-1", "max.message.bytes": "2048"}
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(timeout=30)
    try:
        actions = [make_action(i) for i in range(6)]
        actions[3] = Action.from_dict({**actions[3].to_dict(), "payload": {"blob": "x" * 5000}})
        template = Template({"id": "{{ action_id }}", "body": "{{ payload }}"}) if shaped else None
        with KafkaTarget(
            "actions", topic, bootstrap, flush_timeout=30, template=template
        ) as target:
            failures = target.deliver_many(actions)
            later = target.deliver_many([make_action(10)])
        assert actions[3].action_id in failures
        assert all(isinstance(e, TargetError) and e.retriable for e in failures.values())
        # Each failure is its own record's report, not a guess from a queue left full.
        assert all("delivery to" in str(e) for e in failures.values()), failures
        delivered = [a.action_id for a in actions if a.action_id not in failures]
        if not later:
            delivered.append(make_action(10).action_id)
        records = _read(bootstrap, topic, 1, len(delivered)) if delivered else []
        assert [dict(m.headers() or [])["action-id"].decode() for m in records] == delivered
    finally:
        for future in admin.delete_topics([topic]).values():
            future.result(timeout=30)


def test_kafka_target_unreachable_broker_fails_each_action_retriably() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        actions = [make_action(0), make_action(1, "order-2")]
        with KafkaTarget("actions", "nowhere", f"127.0.0.1:{port}", flush_timeout=1) as target:
            failures = target.deliver_many(actions)
    assert set(failures) == {a.action_id for a in actions}
    for exc in failures.values():
        assert isinstance(exc, TargetError)
        assert exc.retriable


def test_kafka_target_keeps_idempotence_and_acks() -> None:
    with pytest.raises(ConfigError, match=r"enable\.idempotence"):
        KafkaTarget("k", "t", "localhost:9092", properties={"enable.idempotence": False})
    with pytest.raises(ConfigError, match="acks"):
        KafkaTarget("k", "t", "localhost:9092", properties={"acks": 1})
    target = KafkaTarget("k", "t", "localhost:9092")
    failures = target.deliver_many([make_action()])  # never opened: no I/O was done
    assert "not open" in str(failures[make_action().action_id])
    target.close()


# -- command -----------------------------------------------------------------------------

DUMP_ENV = """
import json, os, sys
names = [n for n in os.environ if n.startswith("KEC_") or n in ("IDEMPOTENCY_KEY", "STAGE")]
with open(sys.argv[1], "w") as out:
    json.dump({n: os.environ[n] for n in names}, out)
"""


def test_log_target_appends_one_json_line_per_action(tmp_path: Path) -> None:
    path = tmp_path / "out" / "actions.jsonl"
    target = LogTarget("log", path)
    target.open()
    try:
        target.deliver(make_action(0))
        assert target.deliver_many([make_action(1), make_action(2)]) == {}
    finally:
        target.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["idempotency_key"] for line in lines] == [
        make_action(i).action_id for i in range(3)
    ]
    assert all(line["action_id"] == line["idempotency_key"] for line in lines)


def test_log_target_cuts_a_torn_last_line_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    whole = '{"action_id":"a"}\n' * 3
    path.write_text(whole + '{"action_id":"b","ki')  # as left by a kill mid-write
    target = LogTarget("log", path)
    target.open()
    try:
        target.deliver(make_action(0))
    finally:
        target.close()
    lines = path.read_text().splitlines()
    assert lines[:3] == ['{"action_id":"a"}'] * 3
    assert len(lines) == 4 and json.loads(lines[3])["action_id"] == make_action(0).action_id


def test_log_target_cuts_a_file_that_is_all_torn(tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    path.write_bytes(b"x" * 70000)  # no newline at all, longer than one scan block
    target = LogTarget("log", path)
    target.open()
    target.close()
    assert path.read_bytes() == b""


def test_command_gets_the_action_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    action = make_action()
    argv = [sys.executable, "-c", DUMP_ENV, str(out)]
    with CommandTarget("cmd", argv, env={"STAGE": "test"}) as target:
        target.deliver(action)

    env = json.loads(out.read_text())
    assert env == {
        "KEC_ACTION_ID": action.action_id,
        "KEC_ACTION_KIND": "START",
        "KEC_RULE": "start-task2",
        "KEC_NAMESPACE": "default",
        "KEC_WORKFLOW": "wf",
        "KEC_TASK": "task2",
        "KEC_CONTEXT": "run-7",
        "KEC_EVENT_KEY": "order-1",
        "KEC_ACTION_JSON": action.to_json(),
        "IDEMPOTENCY_KEY": action.action_id,
        "STAGE": "test",
    }


def test_command_gets_the_json_on_stdin_and_runs_a_shell_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "stdin.json"
    action = make_action()
    with CommandTarget("sh", f"cat > {shlex.quote(str(out))}", shell=True, stdin=True) as target:
        target.deliver(action)
    assert out.read_bytes() == action.to_json().encode()


EXIT_WITH = """
import sys
sys.stderr.write("line 1\\nno such task: " + sys.argv[2])
sys.exit(int(sys.argv[1]))
"""


def test_command_exit_codes_decide_rejected_or_retriable() -> None:
    def run(code: int) -> TargetError:
        argv = [sys.executable, "-c", EXIT_WITH, str(code), "task2"]
        with (
            CommandTarget("cmd", argv, reject_exit_codes={3, 4}) as target,
            pytest.raises(TargetError) as caught,
        ):
            target.deliver(make_action())
        return caught.value

    rejected = run(3)
    assert isinstance(rejected, TargetRejected)
    assert "exited with 3" in str(rejected)
    assert "no such task: task2" in str(rejected)

    retriable = run(1)
    assert type(retriable) is TargetError
    assert retriable.retriable
    assert "exited with 1" in str(retriable)


def _gone(pid: int) -> bool:
    """The process no longer runs (exited, or a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # The shell starts a grandchild in its group, records both pids, then waits (bounded).
    script = 'sleep 30 & echo "$$ $!" > "$1.tmp" && mv "$1.tmp" "$1"; wait'
    argv = ["/bin/sh", "-c", script, "sh", str(pids)]
    with (
        CommandTarget("cmd", argv, timeout=2) as target,
        pytest.raises(TargetError) as caught,
    ):
        target.deliver(make_action())
    assert type(caught.value) is TargetError
    assert "timed out" in str(caught.value)
    shell, sleeper = (int(p) for p in pids.read_text().split())
    assert _gone(shell)
    wait_for(lambda: _gone(sleeper), timeout=10, what=f"grandchild {sleeper} to be killed")


DUMP_ARGS = """
import json, sys
with open(sys.argv[1], "w") as out:
    json.dump(sys.argv[2:], out)
"""


def test_command_arguments_are_filled_from_the_action_without_a_shell(tmp_path: Path) -> None:
    """Built from the config's settings, as run builds it: each placeholder fills its one
    argument; a value full of shell syntax stays data."""
    out = tmp_path / "args.json"
    hostile = "$(touch pwned); `id` ; rm -rf / && echo"
    action = Action.from_dict(
        {**make_action().to_dict(), "payload": {"value": {"note": hostile, "n": 7}}}
    )
    fills = ["{{ value.note }}", "order={{ value.n }}", "{{ value }}", "{{ value.missing }}",
             "{{ context }}"]  # fmt: skip
    spec = {"type": "command", "argv": [sys.executable, "-c", DUMP_ARGS, str(out), *fills]}
    with build_target("cmd", spec) as target:
        target.deliver(action)
    assert json.loads(out.read_text()) == [
        hostile,
        "order=7",
        '{"note":' + json.dumps(hostile) + ',"n":7}',
        "",
        "run-7",
    ]
    assert not (tmp_path / "pwned").exists()


def test_command_templates_are_refused_where_they_cannot_be_safe() -> None:
    with pytest.raises(ConfigError, match="cannot be used with shell"):
        CommandTarget("sh", "echo {{ value }}", shell=True)
    with pytest.raises(ConfigError, match="the program itself"):
        CommandTarget("cmd", ["{{ value.program }}", "x"])
    with pytest.raises(ConfigError, match="unknown 'valeu'"):
        CommandTarget("cmd", ["/bin/echo", "{{ valeu.id }}"])
    nul = Action.from_dict({**make_action().to_dict(), "payload": {"value": {"a": "x\u0000y"}}})
    with (
        CommandTarget("cmd", ["/bin/echo", "{{ value.a }}"]) as target,
        pytest.raises(TargetRejected, match="cannot be passed as arguments"),
    ):
        target.deliver(nul)


def test_command_config_errors() -> None:
    target = CommandTarget("cmd", ["no-such-program-kec"])  # constructing does no lookup
    with pytest.raises(ConfigError, match="no-such-program-kec"):
        target.open()
    with pytest.raises(ConfigError, match="list"):
        CommandTarget("cmd", "echo hi")
    with pytest.raises(ConfigError, match="empty"):
        CommandTarget("cmd", [])


# -- python ------------------------------------------------------------------------------

HELPERS = "tests.integration.target_helpers"


@pytest.fixture
def received() -> Iterator[list[Action]]:
    target_helpers.RECEIVED.clear()
    yield target_helpers.RECEIVED
    target_helpers.RECEIVED.clear()


@pytest.mark.parametrize("function", ["record", "record_async", "Handler.handle"])
def test_python_target_calls_the_function(received: list[Action], function: str) -> None:
    action = make_action()
    with PythonTarget("py", f"{HELPERS}:{function}") as target:
        target.deliver(action)
        target.deliver(action)
    assert received == [action, action]


def test_python_target_passes_verdicts_through_and_wraps_other_errors() -> None:
    with (
        PythonTarget("py", f"{HELPERS}:reject") as target,
        pytest.raises(TargetRejected) as rejected,
    ):
        target.deliver(make_action())
    assert rejected.value is target_helpers.REJECTION

    with (
        PythonTarget("py", f"{HELPERS}:busy") as target,
        pytest.raises(TargetError, match="engine busy") as busy,
    ):
        target.deliver(make_action())
    assert busy.value.retriable

    with (
        PythonTarget("py", f"{HELPERS}:crash") as target,
        pytest.raises(TargetError) as crashed,
    ):
        target.deliver(make_action())
    assert type(crashed.value) is TargetError
    assert crashed.value.retriable
    assert isinstance(crashed.value.__cause__, ValueError)
    assert "cannot handle order-1" in str(crashed.value)


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        ("tests.integration.no_such_module:fn", "cannot import"),
        (f"{HELPERS}:missing", "no attribute 'missing'"),
        (f"{HELPERS}:NOT_CALLABLE", "not callable"),
        (HELPERS, "module:function"),
    ],
)
def test_python_target_resolves_in_open(function: str, problem: str) -> None:
    target = PythonTarget("py", function)  # nothing is imported yet
    with pytest.raises(ConfigError, match=problem):
        target.open()
    target.close()


# -- factory -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"type": "log", "path": "/tmp/kec-actions.jsonl", "fsync": True}, LogTarget),
        (
            {"type": "command", "argv": ["true"], "timeout": 5, "reject_exit_codes": [2]},
            CommandTarget,
        ),
        ({"type": "webhook", "url": "http://127.0.0.1:1/x", "headers": {"A": "b"}}, WebhookTarget),
        ({"type": "kafka", "topic": "a", "bootstrap_servers": "h:9092"}, KafkaTarget),
        ({"type": "python", "function": f"{HELPERS}:record"}, PythonTarget),
    ],
)
def test_build_target_by_type(spec: dict[str, Any], kind: type) -> None:
    target = build_target("t1", spec)
    assert isinstance(target, kind)
    assert target.name == "t1"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"type": "ftp"}, "unknown type 'ftp'"),
        ({"path": "x"}, "unknown type None"),
        ({"type": "webhook"}, "url: Field required"),
        ({"type": "webhook", "url": "http://h/", "retries": 3}, "retries: Extra inputs"),
        ({"type": "command", "argv": ["x"], "timeout": 0}, "timeout: Input should be greater"),
        ({"type": "command", "argv": ["x"], "reject_exit_codes": [0]}, "reject_exit_codes"),
        ({"type": "python", "function": "no_colon"}, "function"),
    ],
)
def test_build_target_refuses_bad_specs(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match="target 't1'") as caught:
        build_target("t1", spec)
    assert problem in str(caught.value)


# -- the outbox dispatcher against the webhook --------------------------------------------


class FakeClock:
    """The dispatcher's clock, moved by the test to make a scheduled retry due."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> Iterator[CheckpointStore]:
    with open_store("memory://") as opened:
        yield opened


TP = ("orders", 0)


def _dispatcher(
    store: CheckpointStore, webhook: WebhookTarget, clock: FakeClock, **policy: Any
) -> Dispatcher:
    """A dispatcher that owns TP, run round by round by the test."""
    dispatcher = Dispatcher(
        store, {"hook": webhook}, policy=RetryPolicy(inline_wait=0.001, **policy), clock=clock
    )
    dispatcher.adopt(store.claim("me", [TP]))
    return dispatcher


def _enqueue(store: CheckpointStore, *actions: Action) -> None:
    """Actions checkpointed by an earlier owner of TP, left pending."""
    seed(store, TP, list(actions))


def test_dispatcher_retries_a_5xx_until_the_webhook_accepts(
    http_server: RecordingServer, webhook: WebhookTarget, store: CheckpointStore
) -> None:
    action = make_action()
    _enqueue(store, action)
    clock = FakeClock()
    dispatcher = _dispatcher(store, webhook, clock, inline_attempts=2, max_attempts=5)
    http_server.answer(Reply(503), Reply(503))  # then the default 200

    assert dispatcher.run_round() == 0  # two in-round tries, both 503: a durable retry
    [entry] = store.list_actions(ActionState.PENDING)
    assert entry.attempts == 1
    assert entry.last_error is not None
    assert "503" in entry.last_error
    assert dispatcher.run_round() == 0  # not due yet: nothing is sent
    assert len(http_server.requests) == 2

    clock.now += RetryPolicy().max_delay * 2
    assert dispatcher.run_round() == 1
    assert store.count_actions(ActionState.DONE) == 1
    assert store.count_actions(ActionState.PENDING) == 0
    assert [r.headers["idempotency-key"] for r in http_server.requests] == [action.action_id] * 3
    assert dispatcher.stats.delivered == 1


def test_dispatcher_moves_a_rejected_action_to_the_dead_table(
    http_server: RecordingServer, webhook: WebhookTarget, store: CheckpointStore
) -> None:
    rejected = make_action()
    _enqueue(store, rejected)
    dispatcher = _dispatcher(store, webhook, FakeClock(), inline_attempts=3)
    http_server.answer(Reply(422, body=b"unknown task"))

    assert dispatcher.run_round() == 1
    [dead] = store.list_actions(ActionState.DEAD)
    assert dead.action == rejected
    assert dead.attempts == 1
    assert dead.last_error is not None
    assert "TargetRejected" in dead.last_error
    assert "422" in dead.last_error
    assert store.count_actions(ActionState.PENDING) == 0
    assert len(http_server.requests) == 1  # a refusal is final: no in-round retry
    assert dispatcher.stats.dead == 1


def test_dispatcher_rejection_does_not_take_the_rest_of_the_chunk_down(
    http_server: RecordingServer, webhook: WebhookTarget, store: CheckpointStore
) -> None:
    rejected, fine = make_action(0, "order-1"), make_action(1, "order-2")
    _enqueue(store, rejected, fine)
    dispatcher = _dispatcher(store, webhook, FakeClock())
    http_server.answer(Reply(422))

    dispatcher.run_round()
    assert [e.action for e in store.list_actions(ActionState.DEAD)] == [rejected]
    assert [e.action for e in store.list_actions(ActionState.DONE)] == [fine]


def test_dispatcher_gives_up_on_a_webhook_that_keeps_failing(
    http_server: RecordingServer, webhook: WebhookTarget, store: CheckpointStore
) -> None:
    _enqueue(store, make_action())
    clock = FakeClock()
    dispatcher = _dispatcher(store, webhook, clock, inline_attempts=1, max_attempts=2)
    http_server.answer(Reply(500), Reply(500))

    assert dispatcher.run_round() == 0
    clock.now += RetryPolicy().max_delay * 2
    assert dispatcher.run_round() == 1
    [dead] = store.list_actions(ActionState.DEAD)
    assert dead.last_error is not None
    assert "500" in dead.last_error
    assert len(http_server.requests) == 2


def test_dispatcher_delivers_keys_concurrently_and_each_key_in_order(
    store: CheckpointStore,
) -> None:
    """Four keys of five actions each: the receiver lets a request through only once four
    are in flight together (a barrier, no clock), and records each key's order."""
    keys, per_key = 4, 5
    together = threading.Barrier(keys, timeout=30)
    seen: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            first_round = body["payload"]["i"] == 0
            try:
                if first_round:
                    together.wait()  # all four keys' first actions at once, or 503
                status = 200
            except threading.BrokenBarrierError:
                status = 503
            with lock:
                seen[body["event_key"]].append(body["payload"]["i"])
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with WebhookTarget("hook", url, concurrency=keys) as target:
            _enqueue(store, *[make_action(i, f"k{k}") for i in range(per_key) for k in range(keys)])
            dispatcher = Dispatcher(store, {"hook": target}, policy=RetryPolicy(inline_wait=0.001))
            dispatcher.adopt(store.claim("me", [TP]))
            assert dispatcher.run_round() == keys * per_key
    finally:
        server.shutdown()
        server.server_close()
    assert store.count_actions(ActionState.DONE) == keys * per_key
    assert dict(seen) == {f"k{k}": list(range(per_key)) for k in range(keys)}
    assert dispatcher.stats.failed == 0, "the first four went together through the barrier"
