"""``kill -9`` of the server: every mutation whose confirmation reached a client survives."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from appdefs import backend
from synced_store.client import connect
from synced_store.testing import ServerProcess, wait_for

TESTS = str(Path(__file__).resolve().parents[1])


async def test_confirmed_mutations_survive_kill_minus_9(tmp_path: Path) -> None:
    server = ServerProcess("appdefs:backend", tmp_path / "data", pythonpath=[TESTS])
    server.start()
    writer = await connect(
        server.url, backend, instance_id="k9", token="alice", reconnect_delay=(0.01, 0.1)
    )
    try:
        await writer.wait_for_server_data(10)
        confirmed: list[str] = []
        results = []
        for i in range(300):
            res = await writer.mutate.addItem({"id": f"i{i}", "text": f"item {i}"})
            res.confirmed.add_done_callback(
                lambda f, i=i: confirmed.append(f"i{i}") if not f.exception() else None
            )
            results.append(res)
            if i == 150:
                # Kill while later mutations are still in flight.
                await writer.wait_until(lambda: len(confirmed) >= 100, timeout=10)
                server.kill(signal.SIGKILL)
        killed_with = list(confirmed)
        assert 100 <= len(killed_with) < 300
        server.start()  # same port, same data dir
        await asyncio.wait_for(asyncio.gather(*(r.confirmed for r in results)), 30)
        reader = await connect(server.url, backend, instance_id="k9", token="bob")
        try:
            ids = await wait_for(
                reader,
                lambda ctx: ctx.table("items").keys(),
                lambda keys: len(keys) == 300,
                timeout=20,
            )
            have = {k.item_key for k in ids}
            assert set(killed_with) <= have, "a confirmed mutation was lost"
            # Exactly once: sort keys come from a server counter, one per applied mutation.
            sks = sorted(k.sort_key for k in ids)
            assert sks == [f"items/{n:012d}" for n in range(1, 301)]
        finally:
            await reader.close()
    finally:
        await writer.close()
        server.kill()
