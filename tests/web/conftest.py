"""Fixtures of the browser tests: the chat demo server, headless Chromium, a network guard.

The tests SKIP when /usr/bin/chromium, playwright or the web build is missing, unless the
environment variable CI is set: then they FAIL, so CI never silently skips them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from synced_store.web.testing import NetworkGuard, WebServer, launch_chromium, missing_requirements

IN_CI = bool(os.environ.get("CI"))
TIMEOUT_MS = float(os.environ.get("SYNCED_STORE_BROWSER_TIMEOUT", "30")) * 1000


@pytest.fixture(scope="session")
def _browser_requirements() -> None:
    why = missing_requirements()
    if why is not None:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {why}")
        pytest.skip(f"browser tests skipped: {why}")


@pytest.fixture(scope="module")
def playwright_instance(_browser_requirements: None) -> Iterator[Any]:
    # Module scope: Playwright's sync API keeps an event loop running in this thread, which
    # must be gone before asyncio tests of other modules run.
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_instance: Any) -> Iterator[Any]:
    b = launch_chromium(playwright_instance)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def chat_server(
    _browser_requirements: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WebServer]:
    """``synced-store demo chat`` with a fast local bot (about 2 s per reply)."""
    data = tmp_path_factory.mktemp("chat-data")
    with WebServer.demo("chat", data, "--bot-pace", "0.05", "--bot-words", "40") as server:
        yield server


class Browsers:
    """Opens isolated browser contexts (one per simulated person), each guarded."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.guards: list[NetworkGuard] = []
        self.errors: list[str] = []

    def new_page(self, url: str) -> Any:
        ctx = self.browser.new_context(viewport={"width": 1000, "height": 700})
        ctx.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(ctx)
        self.guards.append(NetworkGuard(ctx))
        page = ctx.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{url}: {e}"))
        # A frame the shell could not handle is logged and the socket reconnects (which would
        # hide the bug behind a re-pull): count it as an error of the page too.
        page.on(
            "console",
            lambda m: "synced-store: frame:" in m.text and self.errors.append(f"{url}: {m.text}"),
        )
        page.goto(url)
        return page

    def off_machine(self) -> list[str]:
        return [u for g in self.guards for u in g.off_machine()]

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def browsers(browser: Any) -> Iterator[Browsers]:
    b = Browsers(browser)
    try:
        yield b
        assert b.off_machine() == [], f"requests left the machine: {b.off_machine()}"
        assert b.errors == [], f"uncaught errors in the page: {b.errors}"
    finally:
        b.close()


@pytest.fixture
def room(request: pytest.FixtureRequest) -> str:
    """A fresh room (instance) per test (parametrized tests included: a long name keeps a
    hash of the whole)."""
    name: str = request.node.name
    slug = "".join(c if c.isalnum() else "-" for c in name)
    if len(slug) > 50:
        slug = slug[:41] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return "t-" + slug.strip("-")


@pytest.fixture
def open_chat(
    browsers: Browsers,
    chat_server: WebServer,
    room: str,
) -> Callable[..., Any]:
    def open_(user: str, *, engine: bool = True, wait_engine: bool = True) -> Any:
        url = f"{chat_server.base_url}/?room={room}&user={user}" + ("" if engine else "&nopy=1")
        page = browsers.new_page(url)
        page.wait_for_selector("body[data-rendered=true]")
        if engine and wait_engine:
            page.wait_for_selector("body[data-mode=optimistic]")
        return page

    return open_


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.timeout(180))
