"""Headless Chromium (Debian's) driven by Playwright; every page a failing test left open is saved as a PNG."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS_DIR", REPO / "tmp" / "artifacts"))


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright gives the browser a fresh, temporary user-data dir.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser, request) -> Iterator[Callable]:
    """Factory: `open_page(http_credentials=...)` opens a page in a fresh browser context."""
    contexts: list = []
    request.node.browser_contexts = contexts

    def open_new(**context_options):
        context = browser.new_context(**context_options)
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context.new_page()

    yield open_new
    for context in contexts:
        context.close()


@pytest.fixture
def page(open_page):
    return open_page()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        saved = save_screenshots(item)
        if saved:
            report.sections.append(("screenshots", "\n".join(str(path) for path in saved)))


def save_screenshots(item) -> list[Path]:
    saved = []
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
    for index, context in enumerate(getattr(item, "browser_contexts", [])):
        for number, open_page in enumerate(context.pages):
            path = ARTIFACTS / f"{name}-{index}-{number}.png"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                open_page.screenshot(path=str(path), full_page=True)
            except Exception as error:
                print(f"could not save a screenshot of {open_page.url}: {error}")
                continue
            print(f"screenshot of {open_page.url}: {path}")
            saved.append(path)
    return saved
