"""The admin console in a real headless Chromium, on a real ``run`` with a token: the
overview shows the partitions of the running connector, a dead action replayed from its
page is delivered once, a searched event shows its action and delivery, and nothing is
shown without the token.

With ``KEC_SCREENSHOTS=DIR`` the tests also save the README's screenshots there
(``KEC_SCREENSHOTS=docs/images pytest tests/browser``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.admin_run import TOKEN, AdminRun, admin_run
from tests.integration.http_recorder import Reply
from tests.support import wait_for

# Of this tree (an editable install elsewhere could lend its own to find_spec).
SHOTS = os.environ.get("KEC_SCREENSHOTS")
ROWS = """return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr'),
    tr => Array.from(tr.querySelectorAll('td'), td => td.textContent.trim()));"""


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, bootstrap: str, admin: AdminClient
) -> Iterator[AdminRun]:
    tmp = tmp_path_factory.mktemp("console")
    topic = f"console-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(
        timeout=30
    )
    with admin_run(tmp, bootstrap=bootstrap, topic=topic, group_id=f"g-{topic}") as running:
        yield running
    admin.delete_topics([topic])[topic].result(timeout=30)


def _by(kind: str) -> Any:
    from selenium.webdriver.common.by import By

    return getattr(By, kind)


def _login(chrome: Any, run: AdminRun) -> None:
    chrome.get(run.url + "/")
    if chrome.current_url.endswith("/login"):
        chrome.find_element(_by("NAME"), "token").send_keys(TOKEN)
        chrome.find_element(_by("CSS_SELECTOR"), "form.login button").click()
        wait_for(lambda: chrome.current_url.rstrip("/") == run.url, timeout=15, what="login")


def _shot(chrome: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        chrome.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def test_a_page_without_the_token_is_refused(chrome: Any, run: AdminRun) -> None:
    chrome.delete_all_cookies()
    chrome.get(run.url + "/dead-letters")
    assert chrome.current_url.endswith("/login")  # sent to the login form, nothing shown
    assert chrome.find_elements(_by("ID"), "dead-actions") == []
    chrome.get(run.url + "/api/v1/status")
    assert '"error":"unauthorized"' in chrome.find_element(_by("TAG_NAME"), "body").text
    chrome.get(run.url + "/login")
    chrome.find_element(_by("NAME"), "token").send_keys("not-the-token")
    chrome.find_element(_by("CSS_SELECTOR"), "form.login button").click()
    problem = wait_for(
        lambda: chrome.find_elements(_by("CSS_SELECTOR"), ".problem"), what="the refusal"
    )
    assert "not the admin token" in problem[0].text
    assert chrome.get_cookies() == []


def test_the_overview_shows_the_partitions_of_the_running_connector(
    chrome: Any, run: AdminRun
) -> None:
    _login(chrome, run)
    instance = run.get("/api/v1/status").json()["instance"]

    def rows() -> list[list[str]]:
        # Read in one script: the page's own script replaces the table every few seconds.
        cells: list[list[str]] = chrome.execute_script(ROWS, "partitions")
        return [c for c in cells if c and c[0] == run.topic]

    found = wait_for(lambda: len(rows()) == 3 and rows(), timeout=30, what="the partitions")
    assert sorted(r[1] for r in found) == ["0", "1", "2"]
    assert {r[2] for r in found} == {instance}
    run.send("order-overview")
    # The script refreshes the live part: the partition's next offset shows up unreloaded.
    wait_for(lambda: any(r[4] not in ("–", "") for r in rows()), timeout=30,
             what="the refreshed next offset")  # fmt: skip
    targets = chrome.find_element(_by("ID"), "targets").text
    assert "audit" in targets and "hook" in targets
    if SHOTS:  # a few samples for the charts
        run.send("order-chart")
        wait_for(lambda: len(run.get("/api/v1/history").json()["at"]) >= 6, timeout=60,
                 interval=1, what="samples for the charts")  # fmt: skip
        chrome.refresh()
        _shot(chrome, "console-overview")
        chrome.get(run.url + "/rules")
        _shot(chrome, "console-rules")


def test_replaying_a_dead_action_from_the_page_delivers_it_once(chrome: Any, run: AdminRun) -> None:
    _login(chrome, run)
    before = len(run.hook.requests)
    run.hook.answer(Reply(status=400, body=b"refused"))
    run.send("bad-console")

    def dead_row() -> Any:
        chrome.get(run.url + "/dead-letters")
        for row in chrome.find_elements(_by("CSS_SELECTOR"), "#dead-actions tbody tr"):
            if "bad-console" in row.text:
                return row
        return None

    row = wait_for(dead_row, timeout=60, interval=0.5, what="the dead action on the page")
    action_id = row.find_element(_by("TAG_NAME"), "code").text
    _shot(chrome, "console-dead-letters")
    row.find_element(_by("CSS_SELECTOR"), "button[data-post]").click()
    chrome.switch_to.alert.accept()  # "Deliver this action again?"
    wait_for(lambda: row.find_element(_by("CSS_SELECTOR"), "button").text == "Replayed",
             timeout=15, what="the page to say replayed")  # fmt: skip
    wait_for(lambda: len(run.hook.requests) >= before + 2, timeout=60, what="the delivery")

    def delivered() -> bool:
        hook = next(t for t in run.get("/api/v1/targets").json()["targets"] if t["name"] == "hook")
        return bool(hook["delivered"] >= 1)

    wait_for(delivered, timeout=30, what="the delivery counted")
    sent = [r.headers.get("idempotency-key") for r in run.hook.requests[before:]]
    assert sent == [action_id, action_id]  # refused once, then delivered once
    assert dead_row() is None


def test_searching_a_sent_event_shows_its_action_and_its_delivery(
    chrome: Any, run: AdminRun
) -> None:
    _login(chrome, run)
    where = run.send("order-search")
    wait_for(lambda: any(a["event_key"] == "order-search" for a in run.audit_lines()),
             timeout=60, what="the delivery")  # fmt: skip
    chrome.get(run.url + "/lineage")
    from selenium.webdriver.support.ui import Select

    Select(chrome.find_element(_by("NAME"), "by")).select_by_value("coordinates")
    chrome.find_element(_by("NAME"), "q").send_keys(where)
    chrome.find_element(_by("CSS_SELECTOR"), "form.search button").click()

    def trace_text() -> str:
        traces = chrome.find_elements(_by("CSS_SELECTOR"), "article.trace")
        return traces[0].text if traces else ""

    text = wait_for(trace_text, timeout=15, what="the trace")
    assert "orders" in text and "audit" in text  # the rule's action, to its target
    assert "done" in text and "delivered at the first attempt" in text  # and its delivery
    _shot(chrome, "console-lineage")
