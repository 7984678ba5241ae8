"""A real headless Chromium (Debian's chromium and chromium-driver, which `make test`
installs) driven by Selenium, for the admin console's tests.

Without them the tests skip, with the reason, unless pytest runs with
``--require-browser`` (as `make test` does): then a missing browser fails the run. The
browser gets a fresh profile and every flag that keeps it from reaching out (no
background networking, component updates, sync or QUIC): this machine's network is
closed, and the tests must not depend on it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
)


def _found() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why they cannot be had."""
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = shutil.which(DRIVER)
    if browser is None or driver is None:
        return "Debian's chromium and chromium-driver are not installed (make browser)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (make setup)"
    return browser, driver


@pytest.fixture(scope="module")
def chrome(request: pytest.FixtureRequest) -> Iterator[object]:
    """A Selenium WebDriver on a fresh headless Chromium, quit after the module."""
    found = _found()
    if isinstance(found, str):
        if request.config.getoption("--require-browser"):
            pytest.fail(f"--require-browser, but {found}", pytrace=False)
        pytest.skip(found)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = found
    profile = Path(tempfile.mkdtemp(prefix="kec-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_page_load_timeout(30)
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)
