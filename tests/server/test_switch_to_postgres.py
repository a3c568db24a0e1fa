"""Moving a live SQLite data dir to PostgreSQL with ``synced-store db copy``: the same clients
reconnect to the PostgreSQL server and carry on from their cookies — no reset, no client
starting over, no mutation lost or applied twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg

from appdefs import backend, get_counter
from synced_store.client import connect
from synced_store.client.transport import Connection, WebSocketConnector, sync_url
from synced_store.protocol.codec import frame_json
from synced_store.testing import ServerProcess, wait_for, wait_for_value

TESTS = str(Path(__file__).resolve().parents[1])
REPO = Path(TESTS).parent


class Recording:
    """A connector noting every poke the client receives: ``(reset, base cookie, cookie)``."""

    def __init__(self, url: str, instance_id: str) -> None:
        self._real = WebSocketConnector(sync_url(url, instance_id))
        self.pokes: list[tuple[bool, Any, Any]] = []

    async def connect(self) -> Connection:
        conn = await self._real.connect()
        pokes = self.pokes

        class Recorded:
            async def send(self, frame: bytes) -> None:
                await conn.send(frame)

            async def recv(self) -> str | bytes:
                text = await conn.recv()
                msg = frame_json(text)
                if type(msg) is dict and msg.get("type") == "poke" and msg.get("final", True):
                    pokes.append((bool(msg.get("reset")), msg.get("base_cookie"), msg["cookie"]))
                return text

            async def close(self) -> None:
                await conn.close()

        return Recorded()


async def _cli(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "synced_store.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": TESTS},
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_db_copy_of_a_live_data_dir_then_the_same_clients_go_on_without_a_reset(
    tmp_path: Path, pg_dsn: str
) -> None:
    data = tmp_path / "data"
    sqlite_server = ServerProcess("appdefs:backend", data, pythonpath=[TESTS])
    await asyncio.to_thread(sqlite_server.start)
    connectors = {u: Recording(sqlite_server.url, "room") for u in ("alice", "bob")}
    alice, bob = [
        await connect(
            sqlite_server.url,
            backend,
            instance_id="room",
            token=u,
            connector=connectors[u],
            reconnect_delay=(0.01, 0.1),
        )
        for u in ("alice", "bob")
    ]
    pg_server: ServerProcess | None = None
    try:
        await alice.wait_for_server_data(10)
        await bob.wait_for_server_data(10)
        for i in range(5):
            await alice.mutate.increment(key="n", amount=1)
            await bob.mutate.addItem(id=f"b{i}", text="from bob")
        await alice.mutate.setValue(key="gone", value=1)
        await alice.mutate.deleteKey(key="gone")  # a tombstone to carry over
        await alice.mutate.setNote(text="alice's own")
        await bob.mutate.serverFails(key="x")  # a rejected mutation
        for c in (alice, bob):
            await c.wait_for_sync(10)
        await wait_for_value(bob, table="counters", key="n", value={"value": 5}, timeout=10)
        await wait_for(alice, lambda ctx: ctx.table("items").keys(), lambda k: len(k) == 5)
        cookies = {c.user_id: c.engine.cookie for c in (alice, bob)}
        lmids = {c.user_id: c.engine.last_mutation_id for c in (alice, bob)}
        client_ids = {c.user_id: c.client_id for c in (alice, bob)}

        # The copy runs while the SQLite server is up (its clients connected), then the switch.
        out = await _cli("db", "copy", "--from-data-dir", str(data), "--to", pg_dsn)
        assert f"room: version {cookies['alice']}" in out
        resets_before = [p for c in connectors.values() for p in c.pokes if p[0]]
        marks = {u: len(c.pokes) for u, c in connectors.items()}
        sqlite_server.kill(signal.SIGTERM)
        pg_server = ServerProcess(
            "appdefs:backend",
            tmp_path / "unused",
            port=sqlite_server.port,
            pythonpath=[TESTS],
            database=pg_dsn,
        )
        await asyncio.to_thread(pg_server.start)

        # Both reconnect by themselves; new mutations work and are applied once.
        res = await alice.mutate.increment(key="n", amount=10)
        await asyncio.wait_for(res.confirmed, 20)
        await wait_for_value(bob, table="counters", key="n", value={"value": 15}, timeout=20)
        res = await bob.mutate.addItem(id="after", text="on postgres")
        await asyncio.wait_for(res.confirmed, 20)
        await wait_for(alice, lambda ctx: ctx.table("items").keys(), lambda k: len(k) == 6)
        for c in (alice, bob):
            after = connectors[c.user_id].pokes[marks[c.user_id] :]
            assert after, "no poke since the switch"
            assert not any(reset for reset, _, _ in after), f"{c.user_id} got a reset"
            # Its first poke from PostgreSQL continues from the cookie it had.
            assert after[0][1] == cookies[c.user_id]
            assert c.client_id == client_ids[c.user_id]  # not started over
            assert c.engine.last_mutation_id == lmids[c.user_id] + 1
        assert [p for c in connectors.values() for p in c.pokes if p[0]] == resets_before
        assert await alice.query(lambda ctx: get_counter(ctx, "gone")) is None
        assert await alice.query(
            lambda ctx: ctx.private_of_user("alice").table("notes").get("note")
        ) == {"text": "alice's own"}
        conn = await asyncpg.connect(pg_dsn)
        try:
            sks = await conn.fetch(
                "SELECT sk FROM synced_store.rows WHERE tbl = 'items' ORDER BY sk"
            )
        finally:
            await conn.close()
        assert [r[0] for r in sks] == [f"items/{i:012d}" for i in range(1, 7)]  # once each
    finally:
        await alice.close()
        await bob.close()
        sqlite_server.kill()
        if pg_server is not None:
            pg_server.kill()
