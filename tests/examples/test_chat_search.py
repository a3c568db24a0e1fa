"""The chat demo's search: ``/search words`` in the terminal client finds the room's messages
through the server (``store.search``), never another user's private rows."""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from synced_store.testing import create_test_harness

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import make_backend  # noqa: E402
from examples.chat.terminal import run_chat_client  # noqa: E402

pytestmark = pytest.mark.e2e


async def typed(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_search_command_in_the_terminal_client(tmp_path: Path) -> None:
    async with await create_test_harness(make_backend(), data_dir=tmp_path) as h:
        bob = await h.create_client("bob")
        await bob.mutate.sendMessage({"id": "0001-b", "text": "the Zebra crossing is closed"})
        await bob.mutate.sendMessage({"id": "0002-b", "text": "nothing to find here"})
        await bob.wait_for_sync()
        out = io.StringIO()
        console = Console(file=out, width=200, force_terminal=False)
        status = await run_chat_client(
            h.url,
            "test",
            "alice",
            lines=typed("zebras are striped", "/search zebra", "/search *", "/quit"),
            console=console,
        )
        assert status == 0
        text = out.getvalue()
        assert "1 message(s) match 'zebra'" in text
        assert "bob: the Zebra crossing is closed" in text
        assert "refused: a search query needs at least one word" in text
        # what alice typed is found too, once confirmed
        hits = await bob.search("messages", "striped")
        assert [h["value"]["text"] for h in hits] == ["zebras are striped"]
