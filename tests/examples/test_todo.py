"""The todo example: its mutators follow the rules, and its client script runs end to end."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from synced_store import ValidationError
from synced_store.testing import (
    TestHarness,
    create_test_harness,
    wait_for_all_clients,
    wait_for_key_deleted,
    wait_for_key_exists,
    wait_for_key_match,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.todo import backend  # noqa: E402

TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[TestHarness]:
    async with await create_test_harness(backend, data_dir=tmp_path, instance_id="list") as h:
        yield h


async def todos(ctx: Any) -> list[dict[str, Any]]:
    return await ctx.table("todos").values()


async def test_todos_sync_in_creation_order(harness: TestHarness) -> None:
    alice = await harness.create_client(user_id="alice")
    bob = await harness.create_client(user_id="bob")
    ids = [await alice.make_unique_id() for _ in range(3)]
    for i, todo_id in enumerate(ids):
        await alice.mutate.addTodo(id=todo_id, text=f"todo {i}")
    # Optimistic: visible locally at once, with a provisional sort key.
    assert [t["text"] for t in await alice.query(todos)] == ["todo 0", "todo 1", "todo 2"]

    seen = await wait_for_all_clients(
        [alice, bob], todos, lambda ts: len(ts) == 3, timeout=TIMEOUT, description="3 todos"
    )
    assert seen[0] == seen[1]
    assert [t["id"] for t in seen[1]] == ids
    assert [t["sortKey"] for t in seen[1]] == sorted(t["sortKey"] for t in seen[1])
    assert all(t["done"] is False for t in seen[1])

    await bob.mutate.setDone(id=ids[1], done=True)
    await wait_for_key_match(
        alice, table="todos", key=ids[1], match=lambda t: t["done"], timeout=TIMEOUT
    )
    await alice.mutate.deleteTodo(id=ids[0])
    await wait_for_key_deleted(bob, table="todos", key=ids[0], timeout=TIMEOUT)


async def test_explicit_done_values_converge_in_server_order(harness: TestHarness) -> None:
    alice, alice_net = await harness.create_controlled_client(user_id="alice")
    bob, bob_net = await harness.create_controlled_client(user_id="bob")
    res = await alice.mutate.addTodo(id="x", text="contested")
    await asyncio.wait_for(res.confirmed, TIMEOUT)
    await wait_for_key_exists(bob, table="todos", key="x", timeout=TIMEOUT)

    alice_net.outbound.disable_auto_flush()
    bob_net.outbound.disable_auto_flush()
    a = await alice.mutate.setDone(id="x", done=True)
    b = await bob.mutate.setDone(id="x", done=False)  # bob's value already holds: a no-op locally
    await alice_net.outbound.enable_auto_flush()
    await asyncio.wait_for(a.confirmed, TIMEOUT)
    await bob_net.outbound.enable_auto_flush()
    await asyncio.wait_for(b.confirmed, TIMEOUT)

    # Bob's mutation ran last on the server with the value he meant, not a toggle of alice's.
    final = await wait_for_all_clients(
        [alice, bob],
        lambda ctx: ctx.table("todos").get("x"),
        lambda t: t is not None and t["done"] is False,
        timeout=TIMEOUT,
        description="x not done on both clients",
    )
    assert final[0] == final[1]


async def test_offline_adds_from_two_clients_get_distinct_sort_keys(harness: TestHarness) -> None:
    alice, alice_net = await harness.create_controlled_client(user_id="alice")
    bob, bob_net = await harness.create_controlled_client(user_id="bob")
    alice_net.outbound.disable_auto_flush()
    bob_net.outbound.disable_auto_flush()
    for client, name in ((alice, "a"), (bob, "b")):
        for i in range(2):
            await client.mutate.addTodo(id=f"{name}{i}", text=f"{name} {i}")
    # Both clients computed the same provisional sort keys while offline.
    assert [t["sortKey"] for t in await alice.query(todos)] == [
        t["sortKey"] for t in await bob.query(todos)
    ]
    await alice_net.outbound.enable_auto_flush()
    await alice.wait_for_sync(TIMEOUT)
    await bob_net.outbound.enable_auto_flush()
    await bob.wait_for_sync(TIMEOUT)
    final = await wait_for_all_clients(
        [alice, bob], todos, lambda ts: len(ts) == 4, timeout=TIMEOUT, description="4 todos"
    )
    assert final[0] == final[1]
    assert len({t["sortKey"] for t in final[0]}) == 4
    assert [t["id"] for t in final[0]] == ["a0", "a1", "b0", "b1"]


async def test_mutators_are_replay_safe(harness: TestHarness) -> None:
    alice = await harness.create_client(user_id="alice")
    failures: list[Exception] = []
    alice.on_failed_mutation(failures.append)
    await alice.mutate.addTodo(id="t", text="first")
    await alice.mutate.addTodo(id="u", text="second")
    await alice.mutate.addTodo(id="t", text="first, edited")  # same id: an update in place
    await alice.mutate.deleteTodo(id="u")
    await alice.mutate.deleteTodo(id="u")  # already gone: a no-op, not an error
    await alice.mutate.setDone(id="missing", done=True)
    await alice.wait_for_sync(TIMEOUT)
    rows = await alice.query(todos)
    assert [(t["id"], t["text"]) for t in rows] == [("t", "first, edited")]
    assert rows[0]["sortKey"] == "todos/000000000001"
    assert failures == []


async def test_invalid_input_is_refused_at_the_call_site(harness: TestHarness) -> None:
    alice = await harness.create_client(user_id="alice")
    with pytest.raises(ValidationError):
        await alice.mutate.addTodo(id="t", text="")
    assert alice.pending_count == 0
    assert await alice.query(todos) == []


@pytest.mark.e2e
async def test_client_script(harness: TestHarness) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.todo.client",
        "--url",
        harness.url,
        "--instance",
        "script-list",
        "--user",
        "carol",
        "--done-first",
        "buy milk",
        "write docs",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 4 * TIMEOUT)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "--- script-list (2 todos)" in text
    assert "[x] buy milk" in text
    assert "[ ] write docs" in text
    watcher = await harness.create_client(user_id="dave", instance_id="script-list")
    assert [t["text"] for t in await watcher.query(todos)] == ["buy milk", "write docs"]
