"""The chat page's windowed history in real headless Chromium: a page opened on a long room
shows the latest 50 messages, and "Load older messages" pages back to the first one through
the page's Python engine (the ``$scan`` query)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synced_store.testing import seed_instance
from synced_store.web.testing import WebServer

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import backend  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_load_older_pages_back_to_the_first_message(
    open_chat: Callable[..., Any], chat_server: WebServer, room: str
) -> None:
    from playwright.sync_api import expect

    rows = {
        f"{i:013d}-seed": {
            "id": f"{i:013d}-seed",
            "text": f"old message {i}",
            "role": "user",
            "senderId": "bob",
        }
        for i in range(120)
    }
    # Playwright's sync API runs a loop in this thread: seed from another one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(
            asyncio.run, seed_instance(backend, chat_server.data_dir, room, rows={"messages": rows})
        ).result()
    page = open_chat("alice")
    items = page.locator("#messages li")
    expect(items).to_have_count(50)
    expect(items.first).to_contain_text("old message 70")
    button = page.locator("#older")
    button.click()
    expect(items).to_have_count(100)
    expect(items.first).to_contain_text("old message 20")
    button.click()
    expect(items).to_have_count(120)
    expect(items.first).to_contain_text("old message 0")
    button.click()
    expect(button).to_have_text("No older messages")
    texts = page.locator("#messages li .bubble").all_text_contents()
    assert [t.strip() for t in texts] == [f"old message {i}" for i in range(120)]
