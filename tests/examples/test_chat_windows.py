"""The chat demo's windowed history: a client joining a long room receives the latest 50
messages, and the terminal client's ``/older`` pages back to the first one."""

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


def _room(n: int) -> dict[str, dict[str, dict[str, str]]]:
    # Ids sort by time, as the clients make them: the key order is the conversation order.
    return {
        "messages": {
            f"{i:013d}-seed": {
                "id": f"{i:013d}-seed",
                "text": f"old message {i}",
                "role": "user",
                "senderId": "bob",
            }
            for i in range(n)
        }
    }


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_a_late_joiner_gets_the_latest_50_and_pages_back(tmp_path: Path) -> None:
    backend = make_backend()
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(_room(120))
        c = await h.create_client("alice")
        keys = await c.query(lambda ctx: ctx.table("messages").keys())
        assert [k.item_key for k in keys] == [f"{i:013d}-seed" for i in range(70, 120)]
        out = io.StringIO()
        status = await run_chat_client(
            h.url,
            h.instance_id,
            "carol",
            lines=_lines("/older", "/older", "/older", "/quit"),
            console=Console(file=out, width=200),
            idle_timeout=10,
        )
        assert status == 0
        text = out.getvalue()
        for i in range(120):
            assert text.count(f"old message {i}\n") == 1, i
        assert "no older messages" in text
