"""Several server processes on one PostgreSQL database: a client may connect to any of them and
sees every other client's mutations whichever process they went through; when PostgreSQL drops
every connection (a restart, a failover) during writes, the servers recover and nothing
confirmed is lost or applied twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from appdefs import backend
from synced_store.client import connect
from synced_store.client.transport import Connection, WebSocketConnector, sync_url
from synced_store.testing import ServerProcess, wait_for, wait_for_value

TESTS = str(Path(__file__).resolve().parents[1])


async def test_clients_of_three_processes_see_each_others_mutations(
    tmp_path: Path, pg_dsn: str
) -> None:
    servers = [
        ServerProcess(
            "appdefs:backend", tmp_path / f"unused{i}", pythonpath=[TESTS], database=pg_dsn
        )
        for i in range(3)
    ]
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
    clients = [
        await connect(s.url, backend, instance_id="room", token=f"user{i}")
        for i, s in enumerate(servers)
    ]
    try:
        for c in clients:
            await c.wait_for_server_data(10)
        results = []
        for _ in range(20):
            for c in clients:
                results.append(await c.mutate.increment(key="n", amount=1))
        await asyncio.wait_for(asyncio.gather(*(r.confirmed for r in results)), 30)
        for c in clients:
            await wait_for_value(c, table="counters", key="n", value={"value": 60}, timeout=15)
    finally:
        for c in clients:
            await c.close()
        for s in servers:
            s.kill()


class Rotating:
    """Each (re)connect goes to the next server (a load balancer, no sticky routing)."""

    def __init__(self, servers: list[ServerProcess], instance_id: str, first: int = 0) -> None:
        self._servers = servers
        self._instance_id = instance_id
        self._next = first

    async def connect(self) -> Connection:
        server = self._servers[self._next % len(self._servers)]
        self._next += 1
        return await WebSocketConnector(sync_url(server.url, self._instance_id)).connect()


async def _terminate_servers_connections(dsn: str) -> int:
    """What a PostgreSQL restart does to the servers: every connection of theirs drops, also
    one in the middle of a writer's transaction (retried until one was caught in one)."""
    conn = await asyncpg.connect(dsn)
    try:
        total = 0
        for _ in range(400):
            busy: int = await conn.fetchval(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'synced-store' AND state <> 'idle'"
            )
            total += await conn.fetchval(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'synced-store%'"
            )
            if busy:
                return total
            await asyncio.sleep(0.005)  # fault injection: try again while writes go on
        raise AssertionError("no server connection was ever caught in a transaction")
    finally:
        await conn.close()


async def test_servers_recover_when_postgres_drops_every_connection_during_writes(
    tmp_path: Path, pg_dsn: str
) -> None:
    servers = [
        ServerProcess(
            "appdefs:backend", tmp_path / f"unused{i}", pythonpath=[TESTS], database=pg_dsn
        )
        for i in range(2)
    ]
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
    writers = [
        await connect(
            servers[i].url,
            backend,
            instance_id="pgdrop",
            token=u,
            connector=Rotating(servers, "pgdrop", first=i),
            reconnect_delay=(0.01, 0.1),
        )
        for i, u in enumerate(("alice", "bob"))
    ]
    confirmed: set[str] = set()
    results = []
    try:
        for w in writers:
            await w.wait_for_server_data(10)
        n = 0
        for cycle in range(3):
            target = len(confirmed) + 40
            while len(confirmed) < target:  # both writers keep mutations in flight
                for w in writers:
                    key = f"{w.user_id}-{n}"
                    n += 1
                    res = await w.mutate.addItem({"id": key, "text": f"cycle {cycle}"})
                    res.confirmed.add_done_callback(
                        lambda f, k=key: confirmed.add(k) if not f.exception() else None
                    )
                    results.append(res)
                await writers[0].wait_until(
                    lambda: sum(1 for r in results if not r.confirmed.done()) < 30, timeout=60
                )
            seen = set(confirmed)
            assert await _terminate_servers_connections(pg_dsn) >= 2  # pools and listeners
            await asyncio.wait_for(
                asyncio.gather(*(r.confirmed for r in results if not r.confirmed.done())), 60
            )
            assert seen <= confirmed
        reader = await connect(servers[1].url, backend, instance_id="pgdrop", token="carol")
        try:
            ids = await wait_for(
                reader,
                lambda ctx: ctx.table("items").keys(),
                lambda keys: len(keys) == len(results),
                timeout=30,
            )
            assert confirmed <= {k.item_key for k in ids}, "a confirmed mutation was lost"
            sks = sorted(k.sort_key for k in ids)
            assert sks == [f"items/{i:012d}" for i in range(1, len(results) + 1)]  # once each
        finally:
            await reader.close()
    finally:
        for w in writers:
            await w.close()
        for s in servers:
            s.kill()
