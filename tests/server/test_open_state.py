"""Open state is bounded: idle instances close, the open-instance cap closes the least recently
used idle one (or refuses with 1013 when none is idle), and a flood of rooms under a low file
descriptor limit leaves the server answering. Real server processes on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from appdefs import backend, get_counter
from rawws import frames_until_close, hello, raw, until
from synced_store.client import connect
from synced_store.testing import TestHarness, create_test_harness, wait_for
from synced_store.testing.server_process import ServerProcess

pytestmark = pytest.mark.e2e
TESTS = str(Path(__file__).resolve().parents[1])


def health(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).json()


async def open_and_leave(url: str, instance: str) -> None:
    """Connect to ``instance`` (creating it), get its data, and leave."""
    ws = await raw(url, instance)
    await ws.send(hello(client_id=f"c-{instance}"))
    await until(ws, "connected")
    await until(ws, "poke")
    await ws.close()


async def test_a_flood_of_rooms_under_a_low_fd_limit_leaves_the_server_answering(
    tmp_path: Path,
) -> None:
    server = ServerProcess(
        "appdefs:backend",
        tmp_path / "data",
        pythonpath=[TESTS],
        rlimits={"RLIMIT_NOFILE": 256},
        # Only the cap closes instances here, and one user may reconnect as fast as it likes
        # (connect rates are tested in test_rate_limits.py).
        limits={
            "idle_instance_timeout": 3600.0,
            "connects_per_second": 1e6,
            "connect_burst": 10**6,
        },
    )
    server.start()
    try:
        body = await asyncio.to_thread(health, server)
        cap = body["max_open_instances"]
        assert 1 <= cap < 60  # the fd budget scaled the cap down to fit 256 descriptors
        for i in range(150):  # the old server wedged for good after 59 instances
            await open_and_leave(server.url, f"room-{i}")
            assert server.open_fds() < 256
        body = await asyncio.to_thread(health, server)
        assert body["instances"] <= cap
        assert len(list((tmp_path / "data").glob("room-*.sqlite3"))) == 150
        # The first room was closed to make room; it opens again with its data.
        c = await connect(server.url, backend, instance_id="room-0", token="back")
        await (await c.mutate.setValue({"key": "k", "value": 1})).confirmed
        await c.close()
    finally:
        server.kill()


async def test_at_the_cap_with_every_instance_in_use_a_new_one_gets_1013(tmp_path: Path) -> None:
    server = ServerProcess(
        "appdefs:backend", tmp_path / "data", pythonpath=[TESTS], limits={"max_open_instances": 3}
    )
    server.start()
    held = []
    try:
        for i in range(3):
            ws = await raw(server.url, f"busy-{i}")
            await ws.send(hello(client_id=f"h{i}"))
            await until(ws, "connected")
            held.append(ws)
        ws = await raw(server.url, "one-too-many")
        await ws.send(hello(client_id="late"))
        frames, code = await frames_until_close(ws)
        assert code == 1013
        assert "try again later" in frames[-1]["message"]
        assert not (tmp_path / "data" / "one-too-many.sqlite3").exists()
        await held.pop().close()  # one instance becomes idle: it is closed for the new one
        c = await connect(server.url, backend, instance_id="one-too-many", token="late")
        await (await c.mutate.setValue({"key": "k", "value": 1})).confirmed
        await c.close()
    finally:
        for ws in held:
            await ws.close()
        server.kill()


async def test_an_idle_instance_closes_and_reopens_on_the_next_connection(tmp_path: Path) -> None:
    from synced_store.server.limits import ServerLimits

    h: TestHarness = await create_test_harness(
        backend, data_dir=tmp_path, limits=ServerLimits(idle_instance_timeout=0.5)
    )
    try:
        registry = h.app.state.registry
        a = await h.create_client("alice")
        await (await a.mutate.setValue({"key": "x", "value": 1})).confirmed
        await a.close()
        closed = asyncio.Event()
        original = registry.close_instance

        async def spy(inst: object, **kw: object) -> None:
            await original(inst, **kw)
            closed.set()

        registry.close_instance = spy
        await asyncio.wait_for(closed.wait(), 10)  # the supervisor closed it (idle 0.5 s)
        assert "test" not in registry.instances
        b = await h.create_client("bob")
        await wait_for(b, lambda ctx: get_counter(ctx, "x"), lambda v: v == 1)
        assert "test" in registry.instances
    finally:
        await h.dispose(check_errors=False)
