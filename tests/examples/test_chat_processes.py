"""The chat app on two server processes sharing PostgreSQL: ``kill -9`` of the process streaming
a bot reply; the other process re-claims the job once its lease ended and finishes the reply."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from synced_store.bot import BotConfig, local_reply
from synced_store.client import connect
from synced_store.client.transport import Connection, WebSocketConnector, sync_url
from synced_store.testing import ServerProcess, wait_for_key_match

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import make_backend  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TIMEOUT = 20.0
PROMPT = "@bot tell me a story"
LEASE = 1.5


class Rotating:
    """Each (re)connect goes to the next server (a load balancer, no sticky routing)."""

    def __init__(self, servers: list[ServerProcess], instance_id: str) -> None:
        self._servers = servers
        self._instance_id = instance_id
        self._next = 0

    async def connect(self) -> Connection:
        server = self._servers[self._next % len(self._servers)]
        self._next += 1
        return await WebSocketConnector(sync_url(server.url, self._instance_id)).connect()


async def _jobs(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        # The bot's jobs (not the room's listing in the lobby, a built-in '$external' job).
        rows = await conn.fetch(
            "SELECT * FROM synced_store.jobs WHERE name = 'callBot' ORDER BY id"
        )
        return [dict(r) for r in rows]
    finally:
        await conn.close()


async def test_kill_9_of_the_streaming_process_another_one_finishes_the_reply(
    tmp_path: Path, pg_dsn: str
) -> None:
    words = 60
    env = {
        "SYNCED_STORE_BOT_PACE": "0.03",
        "SYNCED_STORE_BOT_WORDS": str(words),
        "SYNCED_STORE_BOT_PROVIDER": "local",
    }

    def server(i: int) -> ServerProcess:
        return ServerProcess(
            "examples.chat.app:backend",
            tmp_path / f"unused{i}",
            pythonpath=[str(REPO)],
            env=env,
            database=pg_dsn,
            actions={"job_lease": LEASE},
        )

    a, b = server(0), server(1)
    await asyncio.to_thread(a.start)
    backend = make_backend(BotConfig(pace=0, words=1))  # the client runs mutators only
    alice = await connect(
        a.url,
        backend,
        instance_id="room",
        token="alice",
        user_id="alice",
        connector=Rotating([a, b], "room"),
        reconnect_delay=(0.01, 0.1),
    )
    try:
        await alice.wait_for_server_data(TIMEOUT)
        res = await alice.mutate.sendMessage(id="u1", text=PROMPT, botMessageId="b1")
        await asyncio.wait_for(res.confirmed, TIMEOUT)
        partial = await wait_for_key_match(
            alice,
            table="messages",
            key="b1",
            match=lambda v: v["status"] == "incomplete" and len(v["text"].split()) >= 3,
            timeout=TIMEOUT,
        )
        # B starts while A streams: A renews its lease, so B leaves the job alone.
        await asyncio.to_thread(b.start)
        a.kill()  # SIGKILL, mid-stream
        (job,) = await _jobs(pg_dsn)
        assert (job["status"], job["attempts"]) == ("running", 1)
        full = local_reply("tell me a story", words=words)
        final = await wait_for_key_match(
            alice,
            table="messages",
            key="b1",
            match=lambda v: v["status"] == "complete",
            timeout=TIMEOUT + LEASE,
        )
        assert final["text"] == full
        assert full.startswith(partial["text"])
        msgs = {k.item_key: v for k, v in await alice.query(_entries)}
        assert sorted(msgs) == ["b1", "u1"]  # one user message, one reply
        assert [m for m in msgs.values() if m["role"] == "user"] == [
            {"id": "u1", "text": PROMPT, "role": "user", "senderId": "alice"}
        ]
        # A round trip through B's writer orders us after the job's outcome was recorded.
        r = await alice.mutate.cancelMessage(id="b1")  # a no-op on a complete message
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        (job,) = await _jobs(pg_dsn)
        assert (job["status"], job["attempts"]) == ("done", 2)  # at least once: run twice
    finally:
        await alice.close()
        a.kill()
        b.kill()


async def _entries(ctx: Any) -> list[tuple[Any, Any]]:
    return list(await ctx.table("messages").entries())
