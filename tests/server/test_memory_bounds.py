"""Memory per connection is bounded: catch-ups stream in parts with flow control, and a client
that does not read is closed after the send timeout. A real server process; clients that send
``connect`` and never read (tests/rawws.py ``StuckClient``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from appdefs import backend
from rawws import StuckClient, hello
from synced_store.client import connect
from synced_store.storage.sqlite import SqliteInstanceStore, instance_path
from synced_store.testing import wait_for
from synced_store.testing.server_process import ServerProcess
from synced_store.types import RowKey

pytestmark = pytest.mark.e2e
TESTS = str(Path(__file__).resolve().parents[1])
#: docs/operations.md "Memory": what one connection may hold while a catch-up is stuck on a
#: client that does not read — about two parts in Python and one in the transport buffer.
PER_CONNECTION_BOUND = 2 * 1024 * 1024
ROWS = 3_600
ROW_TEXT = 10_000  # ~36 MB in all


async def seed_instance(data_dir: Path, instance_id: str) -> int:
    """A large instance written straight into its database file; returns its size in bytes."""
    store = SqliteInstanceStore(instance_path(data_dir, instance_id))
    tx = await store.begin()
    for i in range(ROWS):
        value = {"id": f"i{i:05}", "text": f"{i:05}" + "x" * ROW_TEXT}
        await tx.write(RowKey("", "items", f"i{i:05}"), f"{i:08}", orjson.dumps(value), 1)
    await tx.set_schema_version(1)
    await tx.commit(1)
    await store.close()
    return ROWS * ROW_TEXT


async def test_clients_that_never_read_keep_server_memory_bounded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    size = await seed_instance(data, "big")
    server = ServerProcess(
        "appdefs:backend", data, pythonpath=[TESTS], limits={"send_timeout": 4.0}
    )
    server.start()
    stuck: list[StuckClient] = []
    try:
        ok = await connect(server.url, backend, instance_id="big", token="ok")
        await ok.wait_for_server_data(60)  # opens the instance; a reading client gets it all
        assert len(await ok.query(lambda ctx: ctx.table("items").keys())) == ROWS
        before = server.rss()
        server.reset_peak_rss()
        for i in range(30):
            stuck.append(StuckClient(server.port, "big", hello(client_id=f"stuck-{i}")))
        # Meanwhile the server still serves: a write by one client reaches another at once.
        other = await connect(server.url, backend, instance_id="big", token="other")
        await other.wait_for_server_data(60)
        res = await ok.mutate.setValue({"key": "live", "value": 1})
        await asyncio.wait_for(res.confirmed, 10)
        await wait_for(other, lambda ctx: ctx.table("counters").get("live"), lambda v: v)
        # Every stuck client is dropped once its send has waited for the send timeout.
        deadline = time.monotonic() + 30
        while not all(s.closed_by_server() for s in stuck):
            assert time.monotonic() < deadline, "stuck clients were not closed"
            await asyncio.sleep(0.2)  # polling a child process's sockets, bounded
        peak = server.peak_rss()
        grown = peak - before
        assert grown < 30 * PER_CONNECTION_BOUND, (
            f"30 stuck clients of a {size >> 20} MB instance grew the server by "
            f"{grown >> 20} MB (bound {30 * PER_CONNECTION_BOUND >> 20} MB)"
        )
        await ok.close()
        await other.close()
    finally:
        for s in stuck:
            s.close()
        server.kill()
