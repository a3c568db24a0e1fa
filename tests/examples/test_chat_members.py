"""The chat demo's rooms have members and display names: whoever opens a room joins it
(``auto_join``), ``setDisplayName`` writes ``$user_info`` through the server's members API, and
the terminal client shows display names."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from synced_store.testing import (
    create_test_harness,
    text_response,
    wait_for_key_exists,
    wait_for_key_match,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import make_backend  # noqa: E402
from examples.chat.terminal import run_chat_client  # noqa: E402

pytestmark = pytest.mark.e2e
TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))


async def test_opening_a_room_joins_it_and_display_names_come_from_user_info(
    tmp_path: Path,
) -> None:
    backend = make_backend(text_response("hi"))
    async with await create_test_harness(backend, data_dir=tmp_path, instance_id="lobby") as h:
        alice = await h.create_client("alice")
        bob = await h.create_client("bob")
        for c in (alice, bob):
            await wait_for_key_exists(c, table="$users", key="alice", timeout=TIMEOUT)
            await wait_for_key_exists(c, table="$users", key="bob", timeout=TIMEOUT)
        info = await wait_for_key_exists(bob, table="$user_info", key="alice", timeout=TIMEOUT)
        assert info["display_name"] == "alice"  # the default: the user id
        assert await alice.action.setDisplayName(name="Alice A.") == {"ok": True}
        await wait_for_key_match(
            bob,
            table="$user_info",
            key="alice",
            match=lambda v: v["display_name"] == "Alice A.",
            timeout=TIMEOUT,
        )

        async def lines() -> AsyncIterator[str]:
            for line in ("/name Carol C.", "hello from the terminal"):
                yield line

        out = io.StringIO()
        code = await run_chat_client(
            h.url, "lobby", "carol", lines=lines(), console=Console(file=out, width=200)
        )
        assert code == 0, out.getvalue()
        await wait_for_key_match(
            alice,
            table="$user_info",
            key="carol",
            match=lambda v: v["display_name"] == "Carol C.",
            timeout=TIMEOUT,
        )
        assert "Carol C.: hello from the terminal" in out.getvalue()
