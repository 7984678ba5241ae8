"""A real ``event-connector run`` with an ``admin:`` section, for the admin API's tests
(tests/integration/test_admin_api.py) and the console's (tests/browser/).

Its rules: ``order-*`` events of the test's topic notify the ``audit`` log target (a
file); ``bad-*`` events notify ``hook``, a webhook to a recording HTTP server that the
test tells how to answer, with one attempt, so a refusal makes a dead action at once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devkit.server import free_port
from tests.integration.http_recorder import RecordingServer, serving
from tests.support import run_in_repo, start_run, wait_for

TOKEN = "admin-s3cret-token"


@dataclass
class AdminRun:
    proc: subprocess.Popen[bytes]
    url: str
    token: str | None
    config: Path
    log: Path
    audit: Path
    hook: RecordingServer
    topic: str

    def headers(self, auth: bool = True) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}

    def get(self, path: str, *, auth: bool = True, **params: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers(auth), params=params, timeout=30)

    def post(self, path: str, *, auth: bool = True, **headers: str) -> httpx.Response:
        return httpx.post(self.url + path, headers={**self.headers(auth), **headers}, timeout=30)

    def send(self, key: str, value: str = "v") -> str:
        """Send one event to the test's topic; its coordinates (``topic/partition/offset``)."""
        done = run_in_repo("-m", "connector", "send", "-c", str(self.config), key, value)
        assert done.returncode == 0, done.stderr
        found = re.search(r"(\S+)\[(\d+)\]@(\d+)", done.stdout + done.stderr)
        assert found is not None, done.stdout + done.stderr
        return f"{found[1]}/{found[2]}/{found[3]}"

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def write_config(
    tmp: Path,
    *,
    bootstrap: str,
    topic: str,
    group_id: str,
    hook_url: str,
    port: int,
    token: str | None,
    processes: int = 1,
) -> Path:
    token_line = ""
    if token is not None:
        (tmp / "admin-token").write_text(token + "\n")
        token_line = ', token: "${file:admin-token}"'
    config = tmp / "connector.yaml"
    config.write_text(
        f'kafka: {{bootstrap_servers: "{bootstrap}"}}\n'
        f"group_id: {group_id}\n"
        f"namespaces: {{shop: {{topics: [{topic}]}}}}\n"
        f"checkpoint: {{backend: sqlite, path: {tmp / 'store.db'}}}\n"
        f"pipeline: {{processes: {processes}}}\n"
        "retry: {max_attempts: 1, initial_backoff_seconds: 0.1, max_backoff_seconds: 0.1}\n"
        "targets:\n"
        f"  audit: {{type: log, path: {tmp / 'audit.jsonl'}}}\n"
        f'  hook: {{type: webhook, url: "{hook_url}"}}\n'
        "rules:\n"
        '  - {name: orders, namespace: shop, key: "order-*", action: notify, target: audit}\n'
        '  - {name: hooked, namespace: shop, key: "bad-*", action: notify, target: hook}\n'
        f"admin: {{host: 127.0.0.1, port: {port}{token_line}}}\n"
    )
    return config


@contextmanager
def admin_run(
    tmp: Path,
    *,
    bootstrap: str,
    topic: str,
    group_id: str,
    token: str | None = TOKEN,
    processes: int = 1,
) -> Iterator[AdminRun]:
    """The run, ready (its admin status says so), stopped with SIGTERM at the end."""
    port = free_port()
    with serving() as hook:
        config = write_config(
            tmp, bootstrap=bootstrap, topic=topic, group_id=group_id, hook_url=hook.url,
            port=port, token=token, processes=processes,
        )  # fmt: skip
        log = tmp / "run.log"
        proc = start_run(config, log)
        run = AdminRun(
            proc, f"http://127.0.0.1:{port}", token, config, log, tmp / "audit.jsonl", hook,
            topic,
        )  # fmt: skip

        def ready() -> bool:
            assert proc.poll() is None, run.tail()
            try:
                answer = run.get("/api/v1/status")
            except httpx.HTTPError:
                return False
            return answer.status_code == 200 and answer.json()["ready"] is True

        try:
            wait_for(ready, timeout=120, what="the admin API to say ready")
            yield run
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            assert proc.wait(90) == 0, run.tail()
