"""seed_instance: rows written straight to storage are there when the server opens the
instance; an older schema version is migrated on open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import (
    EntryKey,
    SyncedStoreError,
    ValidationError,
    define_backend_config,
    define_migration,
    define_schema,
    table,
)
from synced_store.testing import create_test_harness, seed_instance, wait_for


class Todo(BaseModel):
    text: str
    done: bool = False


class Add(BaseModel):
    id: str
    text: str


async def add(ctx: Any, input: Add) -> None:
    await ctx.table("todos").set(input.id, {"text": input.text, "done": False})


async def migrate(ctx: Any) -> None:
    for key, value in await ctx.table("todos").entries():
        if "title" in value:
            await ctx.table("todos").set(key, {"text": value["title"], "done": False})


backend = define_backend_config(
    define_schema(
        2,
        {"todos": table(Todo), "notes": table()},
        mutators={"add": {"input": Add}},
        migrations={"1to2": define_migration(migrate_data=migrate)},
    ),
    {"add": add},
)


async def rows_of(ctx: Any, name: str = "todos") -> dict[str, Any]:
    return {k.item_key: v for k, v in await ctx.table(name).entries()}


async def test_seeded_rows_sync_to_clients(tmp_path: Path) -> None:
    version = await seed_instance(
        backend,
        tmp_path,
        "room",
        rows={
            "todos": {EntryKey("b", "t1"): {"text": "one"}, EntryKey("a", "t2"): {"text": "two"}}
        },
        private={"alice": {"notes": {"n1": "alice's"}}},
        server_only={"notes": {"s1": "never synced"}},
    )
    assert version == 1
    async with await create_test_harness(backend, data_dir=tmp_path, instance_id="room") as h:
        alice = await h.create_client("alice")
        keys = await alice.query(lambda ctx: ctx.table("todos").keys())
        assert keys == [EntryKey("a", "t2"), EntryKey("b", "t1")]  # seeded sort keys
        assert (await alice.query(rows_of))["t1"] == {"text": "one"}
        mine = await alice.query(lambda ctx: ctx.private_of_user("alice").table("notes").values())
        assert mine == ["alice's"]
        bob = await h.create_client("bob")
        assert await bob.query(lambda ctx: ctx.private_of_user("bob").table("notes").values()) == []
        assert await bob.query(lambda ctx: rows_of(ctx, "notes")) == {}  # server-only stays
        with pytest.raises(SyncedStoreError, match="is open"):
            await h.seed_instance({"todos": {"t3": {"text": "late"}}}, instance_id="room")
        await h.seed_instance({"todos": {"x": {"text": "other room"}}}, instance_id="room2")
        carol = await h.create_client("carol", instance_id="room2")
        assert await carol.query(rows_of) == {"x": {"text": "other room"}}


async def test_an_older_schema_version_is_migrated_on_open(tmp_path: Path) -> None:
    await seed_instance(
        backend, tmp_path, "old", rows={"todos": {"t1": {"title": "v1 row"}}}, schema_version=1
    )
    async with await create_test_harness(backend, data_dir=tmp_path, instance_id="old") as h:
        alice = await h.create_client("alice")
        got = await wait_for(alice, rows_of, lambda r: "t1" in r)
        assert got == {"t1": {"text": "v1 row", "done": False}}


async def test_rows_are_validated_for_the_current_version(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="todos/t1"):
        await seed_instance(backend, tmp_path, "bad", rows={"todos": {"t1": {"title": "v1"}}})
    with pytest.raises(SyncedStoreError, match="newer"):
        await seed_instance(backend, tmp_path, "bad", rows={}, schema_version=3)
    # Nothing of the refused seeding was committed: the next one is the instance's first.
    rows = {"todos": {"t1": {"text": "ok"}}}
    assert await seed_instance(backend, tmp_path, "bad", rows=rows) == 1
