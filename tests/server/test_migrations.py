"""Schema migrations: data rewritten once on the server, old pending mutations rewritten."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from websockets.asyncio.client import connect as ws_connect

from synced_store import SchemaError, define_backend_config, define_migration, define_schema, table
from synced_store.testing import create_test_harness, wait_for


class TodoV1(BaseModel):
    title: str


class AddV1(BaseModel):
    id: str
    title: str


class TodoV2(BaseModel):
    text: str
    done: bool


class AddV2(BaseModel):
    id: str
    text: str


async def add_v1(ctx: Any, input: AddV1) -> None:
    await ctx.table("todos").set(input.id, {"title": input.title})


async def add_v2(ctx: Any, input: AddV2) -> None:
    await ctx.table("todos").set(input.id, {"text": input.text, "done": False})


async def ping(ctx: Any, input: AddV1) -> None:
    return None


async def migrate_data(ctx: Any) -> None:
    for key, value in await ctx.table("todos").entries():
        if "title" in value:
            await ctx.table("todos").set(key, {"text": value["title"], "done": False})


v1 = define_backend_config(
    schema=define_schema(
        schema_version=1,
        tables={"todos": table()},
        mutators={"addTodo": {"input": AddV1}, "ping": {"input": AddV1}},
    ),
    mutators={"addTodo": add_v1, "ping": ping},
)
v2 = define_backend_config(
    schema=define_schema(
        schema_version=2,
        tables={"todos": table(TodoV2)},
        mutators={"addTodo2": {"input": AddV2}},
        migrations={
            "1to2": define_migration(
                migrate_data=migrate_data,
                migrate_pending_mutation={
                    "addTodo": lambda a, emit: emit(
                        "addTodo2", {"id": a["id"], "text": a["title"]}
                    ),
                    "ping": lambda a, emit: None,  # dropped
                },
            )
        },
    ),
    mutators={"addTodo2": add_v2},
)


def todos(ctx: Any) -> Any:
    return ctx.table("todos").entries()


async def test_upgrade_migrates_data_and_pending_mutations(tmp_path: Path) -> None:
    data = tmp_path / "server"
    local = tmp_path / "alice.sqlite3"
    h1 = await create_test_harness(v1, data_dir=data)
    alice, net = await h1.create_controlled_client("alice", persist_path=local)
    await (await alice.mutate.addTodo({"id": "a", "title": "first"})).confirmed
    await net.simulate_disconnect(block_reconnect=True)
    await alice.mutate.addTodo({"id": "b", "title": "written offline under v1"})
    await alice.mutate.ping({"id": "x", "title": "dropped by the migration"})
    await h1.dispose(check_errors=False)

    h2 = await create_test_harness(v2, data_dir=data)
    try:
        alice2 = await h2.create_client("alice", persist_path=local, wait=False)
        assert alice2.pending_count == 2
        # Optimistic replay under v2 already shows the migrated mutation.
        rows = dict((k.item_key, v) for k, v in await alice2.query(todos))
        assert rows["b"] == {"text": "written offline under v1", "done": False}
        await alice2.wait_for_sync(timeout=10)
        bob = await h2.create_client("bob")
        got = await wait_for(bob, todos, lambda r: len(r) == 2)
        assert dict((k.item_key, v) for k, v in got) == {
            "a": {"text": "first", "done": False},  # migrate_data rewrote the stored row
            "b": {"text": "written offline under v1", "done": False},
        }
        store = h2.app.state.registry.instances["test"].store
        assert store.schema_version == 2
    finally:
        await h2.dispose(check_errors=False)


async def test_old_clients_with_a_migration_path_are_accepted_newer_ones_refused(
    tmp_path: Path,
) -> None:
    async with await create_test_harness(v2, data_dir=tmp_path) as h:
        for version, expected in ((1, "connected"), (3, "error")):
            ws = await ws_connect(f"{h.url}/sync/test")
            await ws.send(
                json.dumps(
                    {
                        "type": "connect",
                        "protocol_version": 1,
                        "schema_version": version,
                        "client_id": f"old-{version}",
                        "token": "carol",
                        "cookie": None,
                        "last_mutation_id": 0,
                    }
                )
            )
            first = json.loads(await ws.recv())
            assert first["type"] == expected
            if version == 1:
                await ws.send(
                    json.dumps(
                        {
                            "type": "push",
                            "mutations": [
                                {
                                    "id": 1,
                                    "name": "addTodo",
                                    "args": {"id": "c", "title": "from v1"},
                                }
                            ],
                        }
                    )
                )
            await ws.close()
        bob = await h.create_client("bob")
        got = await wait_for(bob, todos, lambda r: len(r) == 1)
        assert got[0][1] == {"text": "from v1", "done": False}


def test_migration_keys_must_be_single_steps() -> None:
    with pytest.raises(SchemaError):
        define_schema(schema_version=3, tables={}, migrations={"1to3": define_migration()})
