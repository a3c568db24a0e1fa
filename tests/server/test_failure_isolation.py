"""A storage failure stays inside its instance: its clients get 1011 and reconnect, it reopens
with backoff once the cause is gone, other instances never notice, and /healthz tells the
truth. Real server processes on 127.0.0.1; a real full disk (a small tmpfs) where we are root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appdefs import backend, get_counter
from rawws import frames_until_close, hello, raw, until
from synced_store.client import SyncedStoreClient, connect
from synced_store.testing import wait_for
from synced_store.testing.server_process import ServerProcess

pytestmark = pytest.mark.e2e
TESTS = str(Path(__file__).resolve().parents[1])
TIMEOUT = 30.0
IS_ROOT = os.geteuid() == 0
IN_CI = bool(os.environ.get("CI"))


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """Mount a small tmpfs at ``path`` (root only)."""
    if not IS_ROOT:
        if IN_CI:
            pytest.fail("CI runs as root: a tmpfs mount must work there")
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def health(server: ServerProcess) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    return r.status_code, r.json()


async def until_health(
    server: ServerProcess, pred: Any, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Poll /healthz (a child process: bounded polling) until ``pred(status, body)``."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(health, server)
        if pred(status, body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz never matched; last: {status} {body}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def client(
    server: ServerProcess, instance: str, user: str
) -> AsyncIterator[SyncedStoreClient]:
    c = await connect(
        server.url, backend, instance_id=instance, token=user, reconnect_delay=(0.05, 0.5)
    )
    try:
        yield c
    finally:
        await c.close()


async def test_a_full_disk_fails_one_instance_which_recovers_with_nothing_lost(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    small = tmp_path / "small"
    with tmpfs(small, "3m"):
        # The instance "full" lives on the small file system (SQLite follows the link and
        # keeps its WAL next to the real file); "other" on the big one.
        (data / "full.sqlite3").symlink_to(small / "full.sqlite3")
        server = ServerProcess("appdefs:backend", data, pythonpath=[TESTS])
        server.start()
        try:
            async with (
                client(server, "full", "alice") as a,
                client(server, "other", "bob") as b,
                client(server, "other", "carol") as c,
            ):
                for i in range(20):
                    res = await a.mutate.setValue({"key": f"k{i}", "value": i})
                await asyncio.wait_for(res.confirmed, TIMEOUT)
                filler = fill(small)
                big = {"key": "big", "data": "x" * 200_000}
                pending = await a.mutate.setBlob(big)
                body = await until_health(server, lambda s, b: "full" in b["failed_instances"])
                assert body["status"] == "degraded"
                assert "full" in body["failed_instances"]["full"]["error"]  # disk is full
                # The other instance never notices: bob writes, carol sees it.
                await (await b.mutate.setValue({"key": "still", "value": 1})).confirmed
                await wait_for(c, lambda ctx: get_counter(ctx, "still"), lambda v: v == 1)
                assert not pending.confirmed.done()
                assert a.end_reason is None  # 1011 is not terminal: alice keeps reconnecting
                filler.unlink()
                await asyncio.wait_for(pending.confirmed, TIMEOUT)
                await until_health(server, lambda s, b: s == 200 and b["status"] == "ok")
            async with client(server, "full", "dave") as d:
                await d.wait_for_server_data(TIMEOUT)
                values = [
                    await d.query(lambda ctx, i=i: get_counter(ctx, f"k{i}")) for i in range(20)
                ]
                assert values == list(range(20))
                blob = await d.query(lambda ctx: ctx.table("blobs").get("big"))
                assert blob == big["data"]
        finally:
            server.kill()


async def test_clients_of_a_failing_instance_get_1011_with_a_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.sqlite3").write_bytes(b"this is not an SQLite database" * 100)
    server = ServerProcess("appdefs:backend", data, pythonpath=[TESTS])
    server.start()
    try:
        ws = await raw(server.url, "broken")
        await ws.send(hello())
        frames, code = await frames_until_close(ws)
        assert code == 1011
        assert frames[-1]["type"] == "error"
        assert "unavailable" in frames[-1]["message"]
        # Still refused quickly while it waits out its backoff, and healthz names it.
        _, body = await asyncio.to_thread(health, server)
        assert "broken" in body["failed_instances"]
        assert "not a database" in body["failed_instances"]["broken"]["error"]
        async with client(server, "fine", "bob") as b:
            await (await b.mutate.setValue({"key": "x", "value": 1})).confirmed
    finally:
        server.kill()


async def test_a_read_only_data_dir_gives_1011_and_an_unhealthy_process(tmp_path: Path) -> None:
    data = tmp_path / "ro"
    with tmpfs(data, "1m", read_only=True):
        server = ServerProcess("appdefs:backend", data, pythonpath=[TESTS])
        server.start(healthy=False)
        try:
            status, body = await asyncio.to_thread(health, server)
            assert status == 503
            assert body["ok"] is False
            assert body["data_dir"]["writable"] is False
            ws = await raw(server.url, "room")
            await ws.send(hello())
            frames, code = await frames_until_close(ws)
            assert code == 1011
            assert "unavailable" in frames[-1]["message"]
        finally:
            server.kill()
    assert not (data / "room.sqlite3").exists()


async def test_an_instance_that_failed_reopens_by_itself_for_its_clients(tmp_path: Path) -> None:
    """A transient cause (here: the file replaced by garbage, then restored) ends, and the
    client that kept reconnecting gets its mutation confirmed without any help."""
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess("appdefs:backend", data, pythonpath=[TESTS])
    server.start()
    try:
        async with client(server, "r", "alice") as a:
            await (await a.mutate.setValue({"key": "a", "value": 1})).confirmed
        server.stop()  # a clean stop checkpoints the WAL into the file: one file to put back
        good = (data / "r.sqlite3").read_bytes()
        assert not (data / "r.sqlite3-wal").exists()
        (data / "r.sqlite3").write_bytes(b"garbage" * 1000)
        server.start()
        ws = await raw(server.url, "r")
        await ws.send(hello(client_id="probe"))
        _, code = await frames_until_close(ws)
        assert code == 1011
        (data / "r.sqlite3").write_bytes(good)
        async with client(server, "r", "alice") as a2:
            res = await a2.mutate.increment({"key": "a"})
            await asyncio.wait_for(res.confirmed, TIMEOUT)
            assert await a2.query(lambda ctx: get_counter(ctx, "a")) == 2
    finally:
        server.kill()


async def test_healthz_reports_open_instances_and_connections(tmp_path: Path) -> None:
    server = ServerProcess("appdefs:backend", tmp_path / "data", pythonpath=[TESTS])
    server.start()
    try:
        ws = await raw(server.url, "h1")
        await ws.send(hello())
        await until(ws, "connected")
        status, body = await asyncio.to_thread(health, server)
        assert status == 200
        assert body["ok"] is True
        assert body["status"] == "ok"
        assert body["instances"] == 1
        assert body["connections"] == 1
        assert body["failed_instances"] == {}
        await ws.close()
    finally:
        server.kill()
