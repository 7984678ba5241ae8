"""The CLI's logging: no line per HTTP request at INFO, all of them with ``-v``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from connector.cli import QUIET_LOGGERS, _setup_logging


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    saved_root = root.level
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    root.setLevel(saved_root)


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=transport) as client:
        client.post("http://receiver.test/actions", content=b"{}")
    return [r.getMessage() for r in caplog.records if r.name in QUIET_LOGGERS]


def test_http_requests_are_not_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    _setup_logging(verbose=False)
    logging.getLogger().setLevel(logging.INFO)  # pytest's handler may have set the root
    assert _request_lines(caplog) == []


def test_verbose_shows_each_request(caplog: pytest.LogCaptureFixture) -> None:
    _setup_logging(verbose=True)
    logging.getLogger().setLevel(logging.DEBUG)
    lines = _request_lines(caplog)
    assert any("POST http://receiver.test/actions" in line for line in lines), lines
