"""The admin API of a real ``run`` (one process, then a supervisor of two): every endpoint's
answers and refusals (JSON bodies), the token, the console's session, and the OpenAPI
document it serves. The console in a browser is tests/browser/'s."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from openapi_spec_validator import validate

from tests.admin_run import TOKEN, AdminRun, admin_run
from tests.integration.http_recorder import Reply
from tests.support import wait_for

# Of this tree (an editable install elsewhere could lend its own to find_spec).


def _topic(admin: AdminClient, partitions: int = 3) -> str:
    name = f"admin-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result(timeout=30)
    return name


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, bootstrap: str, admin: AdminClient
) -> Iterator[AdminRun]:
    tmp = tmp_path_factory.mktemp("admin")
    topic = _topic(admin)
    with admin_run(tmp, bootstrap=bootstrap, topic=topic, group_id=f"g-{topic}") as running:
        yield running
    admin.delete_topics([topic])[topic].result(timeout=30)


def _json_error(answer: object, status: int, error: str) -> dict[str, object]:
    import httpx

    assert isinstance(answer, httpx.Response)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == error and body["detail"], body
    assert isinstance(body, dict)
    return body


def test_status_partitions_rules_and_targets(run: AdminRun) -> None:
    status = run.get("/api/v1/status").json()
    assert status["ready"] is True and status["status"] == "ready"
    assert set(status["checks"]) >= {"kafka", "group", "store"}
    assert status["version"] and status["group_id"] == f"g-{run.topic}"
    partitions = run.get("/api/v1/partitions").json()["partitions"]
    ours = [p for p in partitions if p["topic"] == run.topic]
    assert sorted(p["partition"] for p in ours) == [0, 1, 2]
    assert {p["owner"] for p in ours} == {status["instance"]}
    assert all(p["epoch"] >= 1 and p["stopped"] is None for p in ours)

    where = run.send("order-1")
    wait_for(lambda: any(a["event_key"] == "order-1" for a in run.audit_lines()), timeout=60,
             what="the order's delivery")  # fmt: skip
    topic, partition, offset = where.split("/")

    def settled() -> bool:
        rows = run.get("/api/v1/partitions").json()["partitions"]
        row = next(p for p in rows if p["topic"] == topic and p["partition"] == int(partition))
        return bool(row["next_offset"] == int(offset) + 1 and row["lag"] == 0)

    wait_for(settled, timeout=30, what="the partition's next offset and lag")
    rules = {r["name"]: r for r in run.get("/api/v1/rules").json()["rules"]}
    assert rules["orders"]["fired"] >= 1 and rules["orders"]["fired_this_run"] >= 1
    assert rules["orders"]["namespace"] == "shop" and rules["orders"]["target"] == "audit"
    assert rules["hooked"]["paused"] is False
    targets = {t["name"]: t for t in run.get("/api/v1/targets").json()["targets"]}
    assert targets["audit"]["delivered"] >= 1 and targets["audit"]["type"] == "log"
    assert targets["hook"]["type"] == "webhook"
    history = run.get("/api/v1/history").json()
    assert history["interval_seconds"] == 5.0
    assert len(history["at"]) == len(history["records_per_second"])


def test_a_dead_action_is_listed_and_replayed_once(run: AdminRun) -> None:
    before = len(run.hook.requests)
    run.hook.answer(Reply(status=400, body=b"refused"))
    run.send("bad-1")

    def dead() -> list[dict[str, object]]:
        listed = run.get("/api/v1/dead-letters").json()["actions"]
        return [a for a in listed if a["event_key"] == "bad-1"]

    (action,) = wait_for(dead, timeout=60, what="the dead action")
    assert action["target"] == "hook" and action["state"] == "dead"
    page = run.get("/api/v1/dead-letters", offset=0, limit=1).json()
    assert page["limit"] == 1 and len(page["actions"]) == 1 and page["total_actions"] >= 1
    for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "x"}):
        _json_error(run.get("/api/v1/dead-letters", **bad), 422, "invalid_query")

    _json_error(run.post("/api/v1/dead-letters/no-such-action/replay"), 404, "not_found")
    action_id = str(action["action_id"])
    replayed = run.post(f"/api/v1/dead-letters/{action_id}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"action_id": action_id, "replayed": 1}
    # A second replay finds it no longer dead: the action is delivered once.
    _json_error(run.post(f"/api/v1/dead-letters/{action_id}/replay"), 404, "not_found")
    wait_for(lambda: len(run.hook.requests) == before + 2, timeout=60, what="the redelivery")
    keys = [r.headers.get("idempotency-key") for r in run.hook.requests[before:]]
    assert keys == [action_id, action_id]
    wait_for(lambda: not dead(), timeout=30, what="the action to leave the dead letters")
    targets = {t["name"]: t for t in run.get("/api/v1/targets").json()["targets"]}
    assert targets["hook"]["delivered"] >= 1 and targets["hook"]["dead"] >= 1


def test_lineage_shows_an_events_action_and_its_delivery(run: AdminRun) -> None:
    where = run.send("order-lineage")
    wait_for(lambda: any(a["event_key"] == "order-lineage" for a in run.audit_lines()),
             timeout=60, what="the delivery")  # fmt: skip

    def delivered() -> list[dict[str, object]]:
        answer = run.get("/api/v1/lineage", coordinates=where).json()
        assert [t["event"]["key"] for t in answer["traces"]] == ["order-lineage"]
        return [a for t in answer["traces"] for a in t["actions"] if a["state"] == "done"]

    (action,) = wait_for(delivered, timeout=30, what="the traced delivery")
    assert action["rule"] == "orders" and action["target"] == "audit"
    by_action = run.get("/api/v1/lineage", action_id=action["action_id"]).json()["traces"]
    coordinates = [f"{e['topic']}/{e['partition']}/{e['offset']}" for e in
                   (t["event"] for t in by_action)]  # fmt: skip
    assert coordinates == [where]


def test_lineage_needs_one_query(run: AdminRun) -> None:
    _json_error(run.get("/api/v1/lineage"), 400, "invalid_query")
    _json_error(run.get("/api/v1/lineage", key="a", context="b"), 400, "invalid_query")
    _json_error(run.get("/api/v1/lineage", limit=0, event_id="x"), 422, "invalid_query")


def test_pause_resume_and_reload(run: AdminRun) -> None:
    _json_error(run.post("/api/v1/rules/no-such-rule/pause"), 404, "not_found")
    _json_error(run.post("/api/v1/targets/no-such-target/pause"), 404, "not_found")
    for kind, name in (("rules", "orders"), ("targets", "hook")):
        paused = run.post(f"/api/v1/{kind}/{name}/pause")
        assert paused.status_code == 200, paused.text
        listed = {r["name"]: r for r in run.get(f"/api/v1/{kind}").json()[kind]}
        assert listed[name]["paused"] is True
        resumed = run.post(f"/api/v1/{kind}/{name}/resume")
        assert resumed.status_code == 200, resumed.text
        listed = {r["name"]: r for r in run.get(f"/api/v1/{kind}").json()[kind]}
        assert listed[name]["paused"] is False
    reloaded = run.post("/api/v1/reload")  # the file as it is: nothing changes
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["summary"] == "nothing changed"
    # A file that no longer loads is refused, and the running config is kept.
    good = run.config.read_text()
    run.config.write_text(good.replace("rules:", "rules: [oops"))
    try:
        _json_error(run.post("/api/v1/reload"), 400, "reload_failed")
    finally:
        run.config.write_text(good)
    assert {r["name"] for r in run.get("/api/v1/rules").json()["rules"]} >= {"orders", "hooked"}


def test_requests_without_the_token_are_refused(run: AdminRun) -> None:
    for answer in (
        run.get("/api/v1/status", auth=False),
        run.post("/api/v1/dead-letters/x/replay", auth=False),
        run.post("/api/v1/reload", auth=False),
    ):
        body = _json_error(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in str(body)
    wrong = run.get("/api/v1/status", auth=False).request.headers
    assert "authorization" not in wrong
    import httpx

    bad = httpx.get(run.url + "/api/v1/status", headers={"Authorization": "Bearer nope"})
    _json_error(bad, 401, "unauthorized")
    # The console: its pages send to the login form; only the right token logs in.
    page = httpx.get(run.url + "/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert httpx.get(run.url + "/login").status_code == 200
    refused = httpx.post(run.url + "/login", data={"token": "nope"}, follow_redirects=False)
    assert refused.status_code == 401 and "set-cookie" not in refused.headers
    with httpx.Client(base_url=run.url) as browser:
        login = browser.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN not in cookie
        page = browser.get("/")
        assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
        # Never framed, nothing loaded from elsewhere, no inline script.
        assert page.headers["x-frame-options"] == "DENY"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "<script>" not in page.text
        assert browser.get("/api/v1/status").status_code == 200
        # A POST with the session alone needs the console's header (no cross-site forms).
        _json_error(browser.post("/api/v1/reload"), 403, "forbidden")
        with_header = browser.post("/api/v1/dead-letters/x/replay", headers={"X-KEC-Console": "1"})
        _json_error(with_header, 404, "not_found")


def test_unknown_paths_and_methods_answer_json(run: AdminRun) -> None:
    _json_error(run.get("/api/v1/nothing-here"), 404, "not_found")
    import httpx

    wrong = httpx.delete(run.url + "/api/v1/status", headers=run.headers())
    _json_error(wrong, 405, "method_not_allowed")
    _json_error(run.get("/static/nothing.js"), 404, "not_found")
    assert run.get("/static/console.js").headers["content-type"].startswith("text/javascript")


def test_the_openapi_document_is_served_valid_without_a_token(run: AdminRun) -> None:
    answer = run.get("/api/v1/openapi.json", auth=False)
    assert answer.status_code == 200
    document = answer.json()
    validate(document)
    assert document["info"]["version"] == "1"
    assert "/api/v1/dead-letters/{action_id}/replay" in document["paths"]


def test_a_supervisor_of_two_processes_serves_the_admin_api(
    tmp_path: Path, bootstrap: str, admin: AdminClient
) -> None:
    topic = _topic(admin, partitions=4)
    with admin_run(
        tmp_path, bootstrap=bootstrap, topic=topic, group_id=f"g-{topic}", processes=2
    ) as running:
        status = running.get("/api/v1/status").json()
        assert status["checks"]["processes"] is True and status["processes"] == 2

        def both_read() -> set[str]:
            rows = running.get("/api/v1/partitions").json()["partitions"]
            owners = {p["owner"] for p in rows if p["topic"] == topic}
            return owners if len(owners) == 2 else set()

        # Each process claims its partitions under its own name in the store.
        owners = wait_for(both_read, timeout=60, what="both processes to own partitions")
        assert status["instance"] not in owners
        running.send("order-s")
        wait_for(lambda: running.audit_lines(), timeout=60, what="the delivery")
        rules = {r["name"]: r for r in running.get("/api/v1/rules").json()["rules"]}
        assert rules["orders"]["fired"] == 1
        wait_for(
            lambda: running.get("/api/v1/rules").json()["rules"][0]["fired_this_run"] == 1,
            timeout=30,
            what="the children's numbers merged",
        )
        # The supervisor's control tells every process.
        paused = running.post("/api/v1/targets/audit/pause")
        assert paused.status_code == 200, paused.text
        targets = {t["name"]: t for t in running.get("/api/v1/targets").json()["targets"]}
        assert targets["audit"]["paused"] is True and targets["audit"]["health"] == "paused"
        assert running.post("/api/v1/targets/audit/resume").status_code == 200
    admin.delete_topics([topic])[topic].result(timeout=30)


def test_a_dead_record_is_listed(run: AdminRun, bootstrap: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(run.topic, value=b"a record without a key", partition=0)
    assert producer.flush(30) == 0

    def listed() -> list[dict[str, object]]:
        records = run.get("/api/v1/dead-letters").json()["records"]
        return [r for r in records if r["value"] == "a record without a key"]

    (record,) = wait_for(listed, timeout=60, what="the dead record")
    assert record["topic"] == run.topic and record["partition"] == 0
    assert record["error"] and record["key"] is None
