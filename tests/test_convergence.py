"""Convergence property test on one server process with SQLite (the run itself, its app and
what it checks are in convergence.py): seeded random runs under reorder, duplication, loss,
disconnects and a server restart. ``SYNCED_STORE_CONVERGENCE_RUNS`` sets the number of seeds
(default 500 in CI, 60 locally); ``SYNCED_STORE_CONVERGENCE_SEED`` replays one seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from convergence import Rows, backend, run_seed, stored_rows
from synced_store.storage.sqlite import instance_path
from synced_store.testing import ControlledTransport, TestHarness, create_test_harness

RUNS = int(os.environ.get("SYNCED_STORE_CONVERGENCE_RUNS", "500" if os.environ.get("CI") else "60"))
ONE_SEED = os.environ.get("SYNCED_STORE_CONVERGENCE_SEED")


class OneServer:
    """The test harness's server (SQLite in a temp dir); restarts are graceful."""

    def __init__(self, h: TestHarness) -> None:
        self.h = h

    async def create_client(
        self, user_id: str, instance_id: str, n: int
    ) -> tuple[Any, ControlledTransport]:
        return await self.h.create_controlled_client(user_id, instance_id=instance_id)

    async def restart(self, rng: random.Random) -> None:
        await self.h.restart_server()

    async def settled(self) -> None:
        return None

    async def server_rows(self, instance_id: str) -> Rows:
        """Read from the instance's database file (so it works while a restarted server has
        not reopened the instance yet)."""
        path = instance_path(self.h.data_dir, instance_id)
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT ns, tbl, item, sk, value FROM rows WHERE deleted = 0"
            ).fetchall()
        finally:
            conn.close()
        return stored_rows(rows)

    def clients_closed(self) -> None:
        self.h.clients.clear()


CHUNK = 50


@pytest.mark.timeout(900)
@pytest.mark.parametrize("first", range(0, RUNS, CHUNK))
async def test_clients_converge_under_faults(tmp_path: Path, first: int) -> None:
    seeds = [int(ONE_SEED)] if ONE_SEED else range(first, min(first + CHUNK, RUNS))
    h = await create_test_harness(backend, data_dir=tmp_path / "server")
    h.allowed_errors.append("mutation failed")
    try:
        world = OneServer(h)
        for seed in seeds:
            await asyncio.wait_for(run_seed(world, seed), 90)
    finally:
        await h.dispose(check_errors=False)
