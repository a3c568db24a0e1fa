"""The chat demo's lobby: a new room lists itself in the lobby from its ``on_init`` hook
(``mutate_external``), once; the terminal client's ``/rooms`` reads it through
``store.external_store("lobby")``."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from synced_store.testing import create_test_harness, wait_for

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import make_backend  # noqa: E402
from examples.chat.lobby import LOBBY  # noqa: E402
from examples.chat.terminal import run_chat_client  # noqa: E402

pytestmark = pytest.mark.e2e
TIMEOUT = 20.0


async def test_rooms_register_in_the_lobby_once_and_the_terminal_lists_them(
    tmp_path: Path,
) -> None:
    async with await create_test_harness(make_backend(lobby=True), data_dir=tmp_path) as h:
        done: list[tuple[str, object]] = []
        h.app.state.actions.on_job_finished.append(
            lambda inst, job: done.append((inst.instance_id, job["name"]))
        )
        alice = await h.create_client("alice", instance_id="r1")
        bob = await h.create_client("bob", instance_id="r2")
        for i in range(3):  # messages do not list the room again
            await alice.mutate.sendMessage(id=f"a{i}", text=f"hello {i}")
        await bob.mutate.sendMessage(id="b0", text="hi from r2")
        await alice.wait_for_sync(TIMEOUT)
        lobby = await alice.external_store(LOBBY)
        rows = await wait_for(
            lobby._client,
            lambda ctx: ctx.table("rooms").values(),
            lambda rows: len(rows) == 2,
            timeout=TIMEOUT,
        )
        assert [(r["id"], r["createdBy"]) for r in rows] == [("r1", "alice"), ("r2", "bob")]
        # One delivery per room (its on_init runs once), not one per message.
        assert sorted(d for d in done if d[0] != LOBBY) == [
            ("r1", "$external"),
            ("r2", "$external"),
        ]
        # A client cannot add rooms by hand: addRoom is refused unless a room sent it.
        lobby_client = await h.create_client("mallory", instance_id=LOBBY)
        with pytest.raises(Exception, match="sent by a room"):
            await lobby_client.mutate.addRoom()

        async def lines() -> AsyncIterator[str]:
            yield "/rooms"
            yield "/quit"

        out = io.StringIO()
        console = Console(file=out, width=120, force_terminal=False)
        code = await asyncio.wait_for(
            run_chat_client(h.url, "r3", "carol", lines=lines(), console=console), TIMEOUT
        )
        assert code == 0
        text = out.getvalue()
        assert "r1  (by alice)" in text
        assert "r2  (by bob)" in text
