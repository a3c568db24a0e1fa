"""The action runner: durable jobs, retries, failure, resume after restart, timeouts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import ActionError, define_backend_config, define_schema, table
from synced_store.testing import TestHarness, create_test_harness, wait_for_value

pytestmark = pytest.mark.e2e
TIMEOUT = 10.0


class Row(BaseModel):
    n: int


class Key(BaseModel):
    key: str


class Job(BaseModel):
    key: str
    fail_times: int = 0
    mode: str = "count"


class Out(BaseModel):
    ok: bool


schema = define_schema(
    1,
    tables={"rows": table(Row)},
    mutators={"bump": {"input": Key}, "schedule": {"input": Job}},
    actions={"work": {"input": Job, "output": Out}},
)
calls: dict[str, int] = {}
events: dict[str, asyncio.Event] = {}


async def bump(ctx: Any, input: Key) -> None:
    cur = await ctx.table("rows").get(input.key)
    await ctx.table("rows").set(input.key, {"n": (cur["n"] if cur else 0) + 1})


async def schedule(ctx: Any, input: Job) -> None:
    ctx.enqueue_action("work", input)


async def work(ctx: Any, input: Job) -> dict[str, Any]:
    calls[input.key] = calls.get(input.key, 0) + 1
    if input.mode == "block" and calls[input.key] == 1:
        events["started"].set()
        await asyncio.Event().wait()  # until the server stops
    if input.mode == "read":
        cur = await ctx.table("rows").get(input.key)
        return {"ok": cur == {"n": 2}}
    if input.mode == "sleep":
        await asyncio.sleep(30)
    if input.mode == "own_timeout":
        raise TimeoutError("upstream timed out")
    if input.mode == "bad_output":
        return {"nope": 1}
    if calls[input.key] <= input.fail_times:
        raise RuntimeError(f"attempt {calls[input.key]} fails")
    await ctx.mutate("bump", {"key": input.key})
    return {"ok": True}


backend = define_backend_config(schema, {"bump": bump, "schedule": schedule}, {"work": work})


def finished(h: TestHarness) -> asyncio.Queue[dict[str, Any]]:
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    h.app.state.actions.on_job_finished.append(lambda inst, job: q.put_nowait(job))
    return q


def job_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(data_dir / "test.sqlite3")
    try:
        return conn.execute("SELECT name, status, attempts FROM jobs ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.fixture(autouse=True)
async def _reset() -> None:
    calls.clear()
    events["started"] = asyncio.Event()


async def harness(tmp_path: Path, **opts: Any) -> TestHarness:
    opts.setdefault("action_options", {"backoff_base": 0.01, "max_attempts": 3})
    return await create_test_harness(backend, data_dir=tmp_path, **opts)


async def test_enqueued_job_retries_then_succeeds(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        q = finished(h)
        c = await h.create_client("u")
        await c.mutate.schedule(key="a", fail_times=2)
        statuses = [(await asyncio.wait_for(q.get(), TIMEOUT))["status"] for _ in range(3)]
        assert statuses == ["pending", "pending", "done"]
        await wait_for_value(c, table="rows", key="a", value={"n": 1}, timeout=TIMEOUT)
        assert job_rows(tmp_path) == [("work", "done", 3)]


async def test_job_fails_for_good_after_max_attempts(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        h.allowed_errors.append("failed for good")
        q = finished(h)
        c = await h.create_client("u")
        await c.mutate.schedule(key="b", fail_times=99)
        for _ in range(3):
            job = await asyncio.wait_for(q.get(), TIMEOUT)
        assert job["status"] == "failed"
        assert "attempt 3 fails" in job["error"]
        assert job_rows(tmp_path) == [("work", "failed", 3)]
        # The server keeps working.
        r = await c.mutate.bump(key="x")
        await asyncio.wait_for(r.confirmed, TIMEOUT)


async def test_invalid_stored_job_input_does_not_break_the_runner(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        h.allowed_errors.append("failed for good")
        q = finished(h)
        c = await h.create_client("u")
        inst = h.app.state.registry.instances["test"]
        await inst.in_writer(lambda s: s.add_job("work", {"key": 5}, "u", 0.0))
        await inst.in_writer(lambda s: s.add_job("nosuch", {}, "u", 0.0))
        seen = [await asyncio.wait_for(q.get(), TIMEOUT) for _ in range(6)]
        assert sorted(j["status"] for j in seen if j["attempts"] == 3) == ["failed", "failed"]
        await c.mutate.schedule(key="ok")
        job = await asyncio.wait_for(q.get(), TIMEOUT)
        assert (job["input"]["key"], job["status"]) == ("ok", "done")


async def test_server_restart_resumes_jobs_without_any_client(tmp_path: Path) -> None:
    h = await harness(tmp_path)
    try:
        c = await h.create_client("u")
        r = await c.mutate.schedule(key="r", mode="block")
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        await asyncio.wait_for(events["started"].wait(), TIMEOUT)
        await c.close()
        h.clients.clear()
        await h.stop_server()  # the blocked job is cancelled and stays "running"
        assert job_rows(tmp_path) == [("work", "running", 1)]
        await h.start_server()  # no client connects: the runner opens the instance itself
        q = finished(h)
        if job_rows(tmp_path)[0][1] != "done":
            job = await asyncio.wait_for(q.get(), TIMEOUT)
            assert job["status"] == "done"
        assert job_rows(tmp_path) == [("work", "done", 2)]
        assert calls["r"] == 2
    finally:
        await h.dispose()


async def test_client_call_timeout_and_handler_errors(tmp_path: Path) -> None:
    async with await harness(tmp_path, action_options={"timeout": 0.2}) as h:
        c = await h.create_client("u")
        with pytest.raises(ActionError, match=r"timed out after 0\.2s"):
            await c.action.work(key="s", mode="sleep")
        with pytest.raises(ActionError, match="upstream timed out"):
            await c.action.work(key="t", mode="own_timeout")
        with pytest.raises(ActionError, match="invalid output"):
            await c.action.work(key="o", mode="bad_output")
        assert await c.action.work(key="k") == {"ok": True}


async def test_action_sees_pending_mutations_of_its_caller(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        c = await h.create_client("u")
        await c.mutate.bump(key="p")
        await c.mutate.bump(key="p")
        assert c.pending_count == 2
        assert await c.action.work(key="p", mode="read") == {"ok": True}  # saw n == 2
        await wait_for_value(c, table="rows", key="p", value={"n": 2}, timeout=TIMEOUT)
