"""Convergence property test on three server processes sharing one PostgreSQL database (the run,
its app and what it checks are in convergence.py).

Clients are spread over the processes, and each reconnect goes to the next one (a load
balancer without sticky routing), so a client's pushes, and the pokes it gets, travel through
every process in turn; the run's one fault is a ``kill -9`` of a random process mid-run (it is
started again, on the same port, while the run goes on). Every run must end with every client
equal to the database's view, no confirmed mutation lost and none applied twice.
``SYNCED_STORE_PG_CONVERGENCE_RUNS`` sets the number of seeds (default 100 in CI, 20 locally);
``SYNCED_STORE_CONVERGENCE_SEED`` replays one seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from convergence import Rows, backend, run_seed, stored_rows
from synced_store.client import connect
from synced_store.client.transport import Connection, WebSocketConnector, sync_url
from synced_store.testing import ControlledConnector, ControlledTransport, ServerProcess

RUNS = int(
    os.environ.get("SYNCED_STORE_PG_CONVERGENCE_RUNS", "100" if os.environ.get("CI") else "20")
)
ONE_SEED = os.environ.get("SYNCED_STORE_CONVERGENCE_SEED")
PROCESSES = 3
CHUNK = 50
TESTS = str(Path(__file__).resolve().parent)


class Rotating:
    """Connects to each process in turn, starting at ``first``."""

    def __init__(self, urls: list[str], instance_id: str, first: int) -> None:
        self._connectors = [WebSocketConnector(sync_url(u, instance_id)) for u in urls]
        self._next = first

    async def connect(self) -> Connection:
        connector = self._connectors[self._next % len(self._connectors)]
        self._next += 1
        return await connector.connect()


class Processes:
    """Three ``synced-store serve`` processes on one database; faults are kill -9."""

    def __init__(self, servers: list[ServerProcess], dsn: str) -> None:
        self.servers = servers
        self.dsn = dsn
        self.clients: list[Any] = []
        self._starting: list[asyncio.Future[None]] = []
        self.kills = 0

    async def create_client(
        self, user_id: str, instance_id: str, n: int
    ) -> tuple[Any, ControlledTransport]:
        connector = ControlledConnector(
            Rotating([s.url for s in self.servers], instance_id, first=n)
        )
        client = await connect(
            self.servers[0].url,
            backend,
            instance_id=instance_id,
            token=user_id,
            user_id=user_id,
            connector=connector,
            reconnect_delay=(0.005, 0.05),
        )
        self.clients.append(client)
        await client.wait_for_server_data(20)
        return client, connector.transport

    async def restart(self, rng: random.Random) -> None:
        victim = rng.choice(self.servers)
        victim.kill(signal.SIGKILL)
        self.kills += 1
        # Started again in the background: the run goes on with the other two meanwhile.
        self._starting.append(asyncio.ensure_future(asyncio.to_thread(victim.start)))

    async def settled(self) -> None:
        starting, self._starting = self._starting, []
        await asyncio.gather(*starting)

    async def server_rows(self, instance_id: str) -> Rows:
        conn = await asyncpg.connect(self.dsn)
        try:
            rows = await conn.fetch(
                "SELECT r.ns, r.tbl, r.item, r.sk, r.value FROM synced_store.rows r "
                "JOIN synced_store.instances i ON i.key = r.inst "
                "WHERE i.id = $1 AND NOT r.deleted",
                instance_id,
            )
        finally:
            await conn.close()
        return stored_rows([tuple(r) for r in rows])

    def clients_closed(self) -> None:
        self.clients.clear()

    def describe(self) -> str:
        """The clients' states (for a failure's message)."""
        return "; ".join(
            f"{c.user_id}/{c.client_id[:8]}: {c.connection_status}, cookie {c.engine.cookie}, "
            f"lmid {c.engine.last_mutation_id}, pending {[m.id for m in c.engine.pending]}, "
            f"ended {c.end_reason!r}"
            for c in self.clients
        )


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("first", range(0, RUNS, CHUNK))
async def test_clients_of_three_processes_converge_under_faults_and_kill_9(
    tmp_path: Path, pg_dsn: str, first: int
) -> None:
    seeds = [int(ONE_SEED)] if ONE_SEED else range(first, min(first + CHUNK, RUNS))
    servers = [
        ServerProcess(
            "convergence:backend",
            tmp_path / f"unused{i}",
            pythonpath=[TESTS],
            database=pg_dsn,
            env={"SYNCED_STORE_TEST_LOG": os.environ.get("SYNCED_STORE_TEST_LOG", "WARNING")},
        )
        for i in range(PROCESSES)
    ]
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
    world = Processes(servers, pg_dsn)
    try:
        for seed in seeds:
            try:
                await asyncio.wait_for(run_seed(world, seed), 120)
            except Exception as exc:
                raise AssertionError(f"seed {seed} failed: {exc!r}; {world.describe()}") from exc
        assert world.kills > 0 or len(seeds) < 10  # the fault happened in this chunk
    finally:
        for c in world.clients:
            await c.close()
        await world.settled()
        for s in servers:
            s.kill()
