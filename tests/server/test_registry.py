"""The registry's bookkeeping under races: an instance in use is never closed to make room,
work for a closing instance is refused at once (never left waiting on a writer that is gone),
an id being closed is never opened twice, and one instance's broken jobs table does not stop
the jobs of the others. Real SQLite files and writer tasks; a real server where clients
matter.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from appdefs import backend
from synced_store import InstanceUnavailableError, define_backend_config, define_schema, table
from synced_store.server.limits import ServerLimits
from synced_store.server.registry import InstanceRegistry
from synced_store.storage.sqlite import instance_path
from synced_store.testing import create_test_harness, wait_for


async def test_work_for_an_instance_being_closed_is_refused_at_once(tmp_path: Path) -> None:
    async with InstanceRegistry(
        backend, tmp_path, limits=ServerLimits(max_open_instances=1)
    ) as reg:
        x = await reg.get("x")
        opening_y = asyncio.ensure_future(reg.get("y"))  # closes the idle x to make room
        await asyncio.sleep(0)  # one turn: get("y") runs until it waits for x's writer
        assert x._closing
        with pytest.raises(InstanceUnavailableError):
            await asyncio.wait_for(x.register_client("c1", "alice", 0), 5)
        with pytest.raises(InstanceUnavailableError):
            await asyncio.wait_for(x.mutate("u", "setValue", {"key": "k", "value": 1}), 5)
        await opening_y


async def test_an_instance_in_use_is_not_closed_to_make_room(tmp_path: Path) -> None:
    async with InstanceRegistry(
        backend, tmp_path, limits=ServerLimits(max_open_instances=1)
    ) as reg:
        async with reg.hold("x") as x:  # a connection in its handshake holds it
            with pytest.raises(Exception, match="all in use"):
                await reg.get("y")
            await x.mutate("u", "setValue", {"key": "k", "value": 1})
            assert reg.instances["x"] is x
        y = await reg.get("y")  # released: now x may go
        assert "x" not in reg.instances
        assert reg.instances["y"] is y


async def test_an_id_being_closed_is_not_opened_a_second_time(tmp_path: Path) -> None:
    async with InstanceRegistry(backend, tmp_path) as reg:
        x = await reg.get("x")
        await x.mutate("u", "setValue", {"key": "k", "value": 1})
        closing = asyncio.ensure_future(reg.close_instance(x))
        await asyncio.sleep(0)  # close_instance is waiting for x's writer
        assert "x" in reg._closing
        again = await reg.get("x")
        assert closing.done(), "get() opened x while its old writer was still running"
        assert again is not x
        assert x.state == "closed"
        await again.mutate("u", "increment", {"key": "k"})
    db = sqlite3.connect(instance_path(tmp_path, "x"))
    versions = [v for (v,) in db.execute("SELECT version FROM rows WHERE tbl = 'counters'")]
    db.close()
    assert versions == [2]  # one writer, one version sequence


class Ask(BaseModel):
    id: str


class Note(BaseModel):
    text: str


async def ask(ctx: Any, input: Ask) -> None:
    await ctx.table("notes").set(input.id, {"text": "asked"})
    ctx.enqueue_action("answer", {"id": input.id})


async def answer(ctx: Any, input: Ask) -> dict[str, Any]:
    await ctx.mutate("done", {"id": input.id})
    return {}


async def done(ctx: Any, input: Ask) -> None:
    await ctx.table("notes").set(input.id, {"text": "answered"})


jobs_backend = define_backend_config(
    define_schema(
        1,
        tables={"notes": table(Note)},
        mutators={"ask": {"input": Ask}, "done": {"input": Ask}},
        actions={"answer": {"input": Ask, "output": dict}},
    ),
    {"ask": ask, "done": done},
    actions={"answer": answer},
)


async def test_a_broken_jobs_table_in_one_instance_does_not_stop_the_others(
    tmp_path: Path,
) -> None:
    async with await create_test_harness(jobs_backend, data_dir=tmp_path) as h:
        h.allowed_errors.append("instance a failed")  # the damaged one: expected, logged once
        registry = h.app.state.registry
        broken = await registry.get("a")  # earlier in the runner's order
        db = sqlite3.connect(instance_path(tmp_path, "a"))  # stands in for a corrupt page
        db.execute("ALTER TABLE jobs RENAME TO jobs_damaged")
        db.commit()
        db.close()
        bob = await h.create_client("bob", instance_id="b")
        await (await bob.mutate.ask({"id": "q1"})).confirmed
        await wait_for(
            bob, lambda ctx: ctx.table("notes").get("q1"), lambda v: v["text"] == "answered"
        )
        await registry.close_instance(broken)  # (already gone if its writer hit the damage)
        assert "a" not in registry.instances
        assert broken.state in ("failed", "closed")
