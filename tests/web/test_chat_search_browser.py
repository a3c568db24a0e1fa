"""The chat page's search box in real headless Chromium: ``$search`` through the Python engine
(Pyodide) and through the JS shell alone, results listed, a bad query refused in a toast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def expect() -> Any:
    from playwright.sync_api import expect as _expect

    return _expect


def search(page: Any, words: str) -> None:
    page.fill("#search-input", words)
    page.press("#search-input", "Enter")


def test_the_search_box_finds_messages_with_and_without_the_engine(
    open_chat: Callable[..., Any],
) -> None:
    alice = open_chat("alice")  # calls through the Python engine
    carol = open_chat("carol", engine=False)  # the shell sends the query itself
    for text in ("the zebra crossing", "nothing here", "a Zebra again"):
        alice.fill("#text", text)
        alice.press("#text", "Enter")
    expect()(carol.locator("#messages li", has_text="a Zebra again")).to_be_visible()
    for page in (alice, carol):
        search(page, "zebra")
        results = page.locator("#search-results li")
        expect()(results).to_have_count(2)
        expect()(page.locator("#search-summary")).to_have_text("2 messages match “zebra”")
        expect()(results.first).to_contain_text("alice: ")
        search(page, "***")
        expect()(page.locator("#toast")).to_contain_text("at least one word")
        page.click("#search-close")
        expect()(page.locator("#search-results")).to_be_hidden()
    got = carol.evaluate("""() => chat.store.search("messages", "crossing")""")
    assert [h["value"]["text"] for h in got] == ["the zebra crossing"]
