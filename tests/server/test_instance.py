"""Instance writer: one writer at a time, in submission order, whether a mutation is committed
by the writer task or inline by its caller (an idle writer lets ``mutate`` commit at once).

Real SQLite store; no server or sessions.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.server.instance import Instance
from synced_store.storage.sqlite import SqliteInstanceStore


class Entry(BaseModel):
    n: int


class Put(BaseModel):
    id: str
    n: int
    hold: bool = False


#: Set by a test to keep a ``hold`` mutation (and so the writer) busy until it is released;
#: ``HOLDING`` is set once such a mutation is inside its commit.
GATES: dict[str, asyncio.Event] = {}
HOLDING: list[asyncio.Event] = []
ORDER: list[str] = []


async def put(ctx: Any, input: Put) -> None:
    ORDER.append(input.id)
    if input.hold:
        HOLDING[0].set()
        await GATES[input.id].wait()
    await ctx.table("entries").set(input.id, {"n": input.n})


schema = define_schema(1, tables={"entries": table(Entry)}, mutators={"put": {"input": Put}})
backend = define_backend_config(schema, {"put": put})


def _instance(tmp_path: Path) -> Instance:
    ORDER.clear()
    GATES.clear()
    HOLDING[:] = [asyncio.Event()]
    return Instance("i", SqliteInstanceStore(tmp_path / "i.sqlite"), backend)


async def _turns(n: int) -> None:
    """Let the loop run ``n`` times (anything runnable would have run)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _hold_a_commit(
    inst: Instance, tg: asyncio.TaskGroup
) -> tuple[asyncio.Task[None], asyncio.Task[None]]:
    """Start the writer and a mutation (inline: the writer is idle) that stays inside its
    commit until ``GATES["a"]`` is set; returns ``(writer, caller)`` once it is in there."""
    GATES["a"] = asyncio.Event()
    writer = tg.create_task(inst.run())
    caller = tg.create_task(inst.mutate("u", "put", {"id": "a", "n": 1, "hold": True}))
    await HOLDING[0].wait()
    return writer, caller


async def test_an_idle_writer_commits_in_the_callers_task(tmp_path: Path) -> None:
    inst = _instance(tmp_path)
    # No writer task runs: the mutation can only commit inline.
    await asyncio.wait_for(inst.mutate("u", "put", {"id": "a", "n": 1}), 5)
    assert inst.store.version == 1
    assert await inst.in_writer(lambda s: s.version) == 1
    await inst.close()


async def test_mutations_queued_behind_a_busy_commit_keep_submission_order(
    tmp_path: Path,
) -> None:
    inst = _instance(tmp_path)
    async with asyncio.TaskGroup() as tg:
        _writer, first = await _hold_a_commit(inst, tg)
        later = [
            tg.create_task(inst.mutate("u", "put", {"id": x, "n": 2})) for x in ("b", "c", "d")
        ]
        await _turns(20)
        assert ORDER == ["a"], "nothing may run while another commit is in progress"
        assert not any(t.done() for t in later)
        GATES["a"].set()
        await first
        await asyncio.gather(*later)
        assert ORDER == ["a", "b", "c", "d"]
        # "a" alone; "b", "c", "d" queued meanwhile, so the writer commits them as one batch.
        assert inst.store.version == 2
        inst.stop()
    await inst.close()


async def test_stop_during_an_inline_commit_lets_it_finish(tmp_path: Path) -> None:
    inst = _instance(tmp_path)
    async with asyncio.TaskGroup() as tg:
        writer, first = await _hold_a_commit(inst, tg)
        inst.stop()
        await _turns(20)
        assert not writer.done(), "the writer must wait for the commit in progress"
        GATES["a"].set()
        await asyncio.wait_for(first, 5)
        await asyncio.wait_for(writer, 5)
    assert inst.store.version == 1
    await inst.close()


async def test_a_loop_of_inline_mutations_lets_other_tasks_run(tmp_path: Path) -> None:
    inst = _instance(tmp_path)
    turns = 0
    stop = False

    async def other() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(inst.run())
        tg.create_task(other())
        for i in range(100):
            await inst.mutate("u", "put", {"id": "a", "n": i})
        stop = True
        inst.stop()
    assert turns >= 100, f"other tasks ran {turns} times during 100 mutations"
    assert inst.store.version == 100
    await inst.close()


async def test_a_caller_cancelled_mid_commit_commits_nothing_and_leaves_no_stray_error(
    tmp_path: Path,
) -> None:
    inst = _instance(tmp_path)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    async with asyncio.TaskGroup() as tg:
        _writer, caller = await _hold_a_commit(inst, tg)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert inst.store.version == 0  # rolled back
        await inst.mutate("u", "put", {"id": "b", "n": 2})  # the instance goes on
        assert inst.store.version == 1
        inst.stop()
    del caller
    gc.collect()
    loop.set_exception_handler(None)
    assert not reported, reported
    await inst.close()
