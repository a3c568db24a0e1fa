"""Rates and quotas: a flooding connection is slowed, then closed with 1008; rejected-mutation
reports are bounded per client and a replay from 0 stays small; action jobs have per-user and
per-instance quotas. Real servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from pydantic import BaseModel

from rawws import frames_until_close, hello, raw, until
from synced_store import MutationFailedError, define_backend_config, define_schema, table
from synced_store.server.limits import ServerLimits
from synced_store.storage.sqlite import instance_path
from synced_store.testing import create_test_harness
from synced_store.testing.server_process import ServerProcess

pytestmark = pytest.mark.e2e
TESTS = str(Path(__file__).resolve().parents[1])


async def drain_until_closed(ws: Any) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


async def flood(ws: Any, frames: Any, timeout: float) -> None:
    """Send ``frames`` as fast as the server takes them, yielding to our own reader between
    sends (this client reads what it is sent)."""
    async with asyncio.timeout(timeout):
        for frame in frames:
            await ws.send(frame)
            await asyncio.sleep(0)


def bad_pushes() -> Any:
    next_id = 1
    while True:
        yield bad_push(next_id, 1000)
        next_id += 1000


def bad_push(first_id: int, n: int) -> str:
    muts = [{"id": first_id + i, "name": "noSuchMutator", "args": {}} for i in range(n)]
    return json.dumps({"type": "push", "mutations": muts})


async def test_an_error_flood_is_slowed_then_closed_and_a_replay_from_0_stays_small(
    tmp_path: Path,
) -> None:
    rate, burst, grace = 2_000, 2_000, 3.0
    data = tmp_path / "data"
    server = ServerProcess(
        "appdefs:backend",
        data,
        pythonpath=[TESTS],
        limits={
            "mutations_per_second": rate,
            "mutation_burst": burst,
            "throttle_close_after": grace,
        },
    )
    server.start()
    try:
        ws = await raw(server.url, "flood")
        await ws.send(hello(client_id="flooder"))
        await until(ws, "connected")
        started = time.monotonic()
        drain = asyncio.ensure_future(drain_until_closed(ws))  # reads, as a client must
        with pytest.raises(websockets.ConnectionClosed):
            await flood(ws, bad_pushes(), 60)
        elapsed = time.monotonic() - started
        await drain
        assert ws.close_code == 1008
        assert "rate limit" in (ws.close_reason or "")
        assert elapsed < grace + 10
        db = sqlite3.connect(instance_path(data, "flood"))
        (lmid,) = db.execute(
            "SELECT last_mutation_id FROM clients WHERE client_id = 'flooder'"
        ).fetchone()
        (errors,) = db.execute("SELECT COUNT(*) FROM mutation_errors").fetchone()
        db.close()
        # Slowed to its rate: the old server wrote 4.1 M error rows in 31 s.
        assert lmid <= burst + rate * elapsed + 2_000
        assert errors <= 100  # Retention.errors_per_client
        server.reset_peak_rss()
        before = server.rss()
        replay = await raw(server.url, "flood")
        await replay.send(hello(client_id="flooder", last_mutation_id=0))
        await until(replay, "connected")
        poke = await until(replay, "poke")
        assert poke["last_mutation_id"] == lmid
        assert 0 < len(poke["errors"]) <= 100
        assert all(e["kind"] == "unknown_name" for e in poke["errors"])
        assert len(json.dumps(poke)) < 64 * 1024
        await replay.close()
        assert server.peak_rss() - before < 32 * 1024 * 1024
    finally:
        server.kill()


async def test_a_frame_flood_is_slowed_then_closed_with_1008(tmp_path: Path) -> None:
    server = ServerProcess(
        "appdefs:backend",
        tmp_path / "data",
        pythonpath=[TESTS],
        limits={"frames_per_second": 50, "frame_burst": 50, "throttle_close_after": 2.0},
    )
    server.start()
    try:
        ws = await raw(server.url, "r")
        await ws.send(hello(client_id="pulls"))
        await until(ws, "connected")
        drain = asyncio.ensure_future(drain_until_closed(ws))
        with pytest.raises(websockets.ConnectionClosed):
            await flood(ws, itertools.repeat('{"type":"pull"}'), 30)
        await drain
        assert ws.close_code == 1008
    finally:
        server.kill()


# -- action job quotas --------------------------------------------------------------------


class Note(BaseModel):
    text: str


class Ask(BaseModel):
    id: str


async def ask(ctx: Any, input: Ask) -> None:
    await ctx.table("notes").set(input.id, {"text": "asked"})
    ctx.enqueue_action("answer", {"id": input.id})


async def answer(ctx: Any, input: Ask) -> dict[str, Any]:
    await asyncio.Event().wait()  # never finishes: every job stays unfinished
    return {}


quota_schema = define_schema(
    1,
    tables={"notes": table(Note)},
    mutators={"ask": {"input": Ask}},
    actions={"answer": {"input": Ask, "output": dict}},
)
quota_backend = define_backend_config(quota_schema, {"ask": ask}, actions={"answer": answer})


async def test_enqueue_over_the_per_user_quota_is_a_permanent_error_with_nothing_applied(
    tmp_path: Path,
) -> None:
    limits = ServerLimits(max_queued_jobs_per_user=3, max_queued_jobs_per_instance=5)
    async with await create_test_harness(quota_backend, data_dir=tmp_path, limits=limits) as h:
        a = await h.create_client("alice")
        for i in range(3):
            await (await a.mutate.ask({"id": f"a{i}"})).confirmed
        res = await a.mutate.ask({"id": "a3"})
        with pytest.raises(MutationFailedError) as failed:
            await res.confirmed
        assert failed.value.error_kind == "quota_exceeded"
        assert await a.query(lambda ctx: ctx.table("notes").get("a3")) is None  # rolled back
        b = await h.create_client("bob")
        await (await b.mutate.ask({"id": "b0"})).confirmed
        await (await b.mutate.ask({"id": "b1"})).confirmed
        res = await b.mutate.ask({"id": "b2"})  # the instance's quota (5) is reached
        with pytest.raises(MutationFailedError) as failed:
            await res.confirmed
        assert "this instance" in failed.value.message
        db = sqlite3.connect(instance_path(tmp_path, "test"))
        jobs = db.execute("SELECT user_id, COUNT(*) FROM jobs GROUP BY user_id").fetchall()
        db.close()
        assert dict(jobs) == {"alice": 3, "bob": 2}


async def test_running_jobs_per_user_are_capped(tmp_path: Path) -> None:
    limits = ServerLimits(max_running_jobs_per_user=2)
    async with await create_test_harness(quota_backend, data_dir=tmp_path, limits=limits) as h:
        runner = h.app.state.actions
        started: list[str] = []
        three = asyncio.Event()

        def on_start(inst: Any, job: dict[str, Any]) -> None:
            started.append(job["user_id"])
            if len(started) == 3:
                three.set()

        runner.on_job_started.append(on_start)
        a = await h.create_client("alice")
        for i in range(5):
            await (await a.mutate.ask({"id": f"a{i}"})).confirmed
        b = await h.create_client("bob")
        await (await b.mutate.ask({"id": "b0"})).confirmed
        await asyncio.wait_for(three.wait(), 10)
        await runner._claim_round()  # one more round: alice is at her limit, bob has no more
        assert sorted(started) == ["alice", "alice", "bob"]
        db = sqlite3.connect(instance_path(tmp_path, "test"))
        rows = db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        db.close()
        assert dict(rows) == {"running": 3, "pending": 3}


async def test_a_burst_of_action_frames_is_capped_per_connection_and_holds_no_fds(
    tmp_path: Path,
) -> None:
    """The per-connection cap counted each action only once its task ran, so a burst read in
    one loop turn started them all, each holding a database connection while it waited."""
    async with await create_test_harness(
        quota_backend, data_dir=tmp_path, action_options={"client_concurrency": 4}
    ) as h:
        ws = await raw(h.url)
        await ws.send(hello(token="alice"))
        await until(ws, "connected")
        cap = ServerLimits().max_actions_per_connection
        fds = len(os.listdir("/proc/self/fd"))
        for i in range(300):
            await ws.send(
                json.dumps(
                    {
                        "type": "action",
                        "request_id": f"r{i}",
                        "name": "answer",
                        "input": {"id": "x"},
                    }
                )
            )
        refused = 0
        async with asyncio.timeout(10):
            while refused < 300 - cap:
                msg = json.loads(await ws.recv())
                if msg.get("type") == "action_result":
                    assert not msg["ok"]
                    assert "in flight" in msg["error"]
                    refused += 1
        session = next(iter(h.app.state.registry.instances["test"].sessions.values()))
        assert session.actions_in_flight == cap
        # Only the 4 running actions hold a read connection (2 fds each), not the 12 waiting.
        assert len(os.listdir("/proc/self/fd")) - fds <= 4 * 2 + 2
        await ws.close()


async def test_reconnecting_does_not_refill_a_users_buckets(tmp_path: Path) -> None:
    """Buckets belong to the user, not the connection: a client that reconnects after each
    burst is still slowed (each connection used to start with a full burst)."""
    server = ServerProcess(
        "appdefs:backend",
        tmp_path / "data",
        pythonpath=[TESTS],
        limits={"mutations_per_second": 1_000, "mutation_burst": 1_000},
    )
    server.start()
    try:
        started = time.monotonic()
        for n in range(6):  # each connection (a new client id) pushes a burst's worth
            ws = await raw(server.url, "r")
            await ws.send(hello(client_id=f"c{n}", token="mallory"))
            await until(ws, "connected")
            await ws.send(bad_push(1, 1000))
            resp = await until(ws, "push_response", timeout=30)
            assert resp["last_mutation_id"] == 1000
            await ws.close()
        elapsed = time.monotonic() - started
        # 6,000 mutations at 1,000/s after a burst of 1,000: at least 5 s for one user.
        assert elapsed >= 4.5, f"6 bursts on fresh connections took only {elapsed:.1f}s"
    finally:
        server.kill()


async def test_new_connections_and_client_ids_per_user_are_limited(tmp_path: Path) -> None:
    server = ServerProcess(
        "appdefs:backend",
        tmp_path / "data",
        pythonpath=[TESTS],
        limits={"connects_per_second": 0.01, "connect_burst": 6, "max_clients_per_user": 3},
    )
    server.start()
    try:
        outcomes: list[tuple[int, str]] = []
        for n in range(8):  # a new client id each time, as fast as possible
            ws = await raw(server.url, "r")
            await ws.send(hello(client_id=f"id{n}", token="mallory"))
            first = json.loads(await ws.recv())
            if first["type"] == "connected":
                outcomes.append((0, "connected"))
                await ws.close()
                continue
            _, code = await frames_until_close(ws, timeout=5)
            outcomes.append((code, first["message"]))
        assert [o[1] for o in outcomes[:3]] == ["connected"] * 3
        assert all(code == 1008 for code, _ in outcomes[3:])
        assert all("client ids" in m for _, m in outcomes[3:6])  # the quota of client ids
        assert all("new connections" in m for _, m in outcomes[6:])  # then the connect rate
        ws = await raw(server.url, "r")  # another user is not affected
        await ws.send(hello(client_id="bobs", token="bob"))
        await until(ws, "connected")
        await ws.close()
    finally:
        server.kill()
