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


async def test_confirmed_writes_survive_three_kill_9_cycles_under_load(tmp_path: Path) -> None:
    """Two writers keep pushing while the server is killed three times: every mutation a
    client saw confirmed is there afterwards, exactly once."""
    server = ServerProcess("appdefs:backend", tmp_path / "data", pythonpath=[TESTS])
    server.start()
    writers = [
        await connect(server.url, backend, instance_id="k3", token=u, reconnect_delay=(0.01, 0.1))
        for u in ("alice", "bob")
    ]
    confirmed: set[str] = set()
    results = []
    try:
        n = 0
        for cycle in range(3):
            target = len(confirmed) + 60
            while len(confirmed) < target:  # under load: both writers keep 20 mutations in flight
                for w in writers:
                    key = f"{w.user_id}-{n}"
                    n += 1
                    res = await w.mutate.addItem({"id": key, "text": f"cycle {cycle}"})
                    res.confirmed.add_done_callback(
                        lambda f, k=key: confirmed.add(k) if not f.exception() else None
                    )
                    results.append(res)
                await writers[0].wait_until(
                    lambda: sum(1 for r in results if not r.confirmed.done()) < 40, timeout=30
                )
            seen = set(confirmed)
            server.kill(signal.SIGKILL)
            server.start()
            await asyncio.wait_for(
                asyncio.gather(*(r.confirmed for r in results if not r.confirmed.done())), 60
            )
            assert seen <= confirmed
        reader = await connect(server.url, backend, instance_id="k3", token="carol")
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
        server.kill()
