"""Members, the system tables and the system hooks, against real servers and clients.

``members_only``: a non-member is refused (4001) before its client is registered or a row is
sent, and a refused user never creates an instance; the members API and ``auto_join`` change
``$users`` and every client sees it live; ``on_init`` runs exactly once per instance, across a
restart and across two servers on one PostgreSQL database; hooks run with ``is_system`` and a
system ``source``; nobody writes a ``$`` table through a mutator.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from synced_store.client import connect
from synced_store.errors import (
    InstanceUnavailableError,
    MutationFailedError,
    PermissionDeniedError,
    ValidationError,
)
from synced_store.server.auth import Access
from synced_store.server.members import (
    add_members,
    list_members,
    remove_members,
    set_user_info,
)
from synced_store.testing import (
    TestHarness,
    create_test_harness,
    wait_for_key_deleted,
    wait_for_key_exists,
    wait_for_key_match,
)

from .members_app import auto_join, backend, members_only

TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))


def has_file(h: TestHarness, instance_id: str) -> bool:
    return any(Path(h.data_dir).glob(f"{instance_id}.sqlite3*"))


async def outcome(h: TestHarness, user: str, instance_id: str) -> tuple[str, Any]:
    """Connect ``user``: ``("connected" or the end reason, the client)``."""
    client = await h.create_client(user, instance_id=instance_id, wait=False)
    await client.wait_until(
        lambda: client.end_reason is not None or client.has_server_data, timeout=TIMEOUT
    )
    return client.end_reason or "connected", client


async def rows(client: Any, table: str) -> dict[str, Any]:
    async def q(ctx: Any) -> dict[str, Any]:
        return {k.item_key: v for k, v in await ctx.table(table).entries()}

    result: dict[str, Any] = await client.query(q)
    return result


def registry(h: TestHarness) -> Any:
    return h.app.state.registry


async def test_members_only_refuses_a_non_member_before_anything_is_registered_or_sent(
    tmp_path: Path,
) -> None:
    async with await create_test_harness(members_only, data_dir=tmp_path) as h:
        h.allowed_errors.append("session ended by the server (auth_failed)")
        bob = await h.create_client("bob", instance_id="room")
        await bob.mutate.addNote(id="n1", text="secret")
        await wait_for_key_exists(bob, table="notes", key="n1", timeout=TIMEOUT)
        users = await wait_for_key_exists(bob, table="$users", key="bob", timeout=TIMEOUT)
        assert users["role"] == "owner"
        assert users["added_by"] == "creator"

        reason, alice = await outcome(h, "alice", "room")
        assert reason == "auth_failed"
        assert not alice.has_server_data
        assert await rows(alice, "notes") == {}
        assert await rows(alice, "$users") == {}
        inst = registry(h).instances["room"]
        assert await inst.store.client(alice.client_id) is None  # never registered
        assert await inst.store.client(bob.client_id) is not None

        assert await add_members(registry(h), "room", ["alice"]) == ["alice"]
        reason, alice2 = await outcome(h, "alice", "room")
        assert reason == "connected"
        await wait_for_key_exists(alice2, table="notes", key="n1", timeout=TIMEOUT)


async def test_a_refused_user_creates_nothing(tmp_path: Path) -> None:
    def authorize(user_id: str, instance_id: str, claims: Mapping[str, Any]) -> Access:
        return Access.CREATE if user_id == "admin" else Access.OPEN

    async with await create_test_harness(members_only, data_dir=tmp_path, authorize=authorize) as h:
        h.allowed_errors.append("session ended by the server (auth_failed)")
        reason, _ = await outcome(h, "alice", "new-room")
        assert reason == "auth_failed"
        assert not has_file(h, "new-room")
        # An admin provisions the room with its members through the API: alice gets in.
        assert await add_members(registry(h), "new-room", ["alice"], role="writer") == ["alice"]
        assert has_file(h, "new-room")
        reason, alice = await outcome(h, "alice", "new-room")
        assert reason == "connected"
        me = await wait_for_key_exists(alice, table="$users", key="alice", timeout=TIMEOUT)
        assert me["role"] == "writer"
        assert me["added_by"] == "system"
        # Not created by a connection: nobody became its owner.
        assert [m["user_id"] for m in await list_members(registry(h), "new-room")] == ["alice"]


async def test_members_api_changes_are_seen_live_and_run_the_hooks(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        carol = await h.create_client("carol", instance_id="room")
        assert await rows(carol, "$users") == {}  # no membership option: nobody joins
        init = await wait_for_key_exists(carol, table="log", key="init", timeout=TIMEOUT)
        assert init["count"] == 1
        assert init["is_system"] is True
        assert init["source"] == {"type": "system", "event": "init", "created_by": "carol"}

        assert await add_members(registry(h), "room", ["alice", "bob", "alice"]) == [
            "alice",
            "bob",
        ]
        row = await wait_for_key_exists(carol, table="$users", key="bob", timeout=TIMEOUT)
        assert row["role"] == "member"
        info = await wait_for_key_exists(carol, table="$user_info", key="bob", timeout=TIMEOUT)
        assert info == {"user_id": "bob", "display_name": "bob", "avatar_url": ""}
        add = await wait_for_key_exists(carol, table="log", key="add", timeout=TIMEOUT)
        assert add["users"] == ["alice", "bob"]
        assert add["is_system"] is True
        assert add["source"] == {
            "type": "system",
            "event": "add_users",
            "user_ids": ["alice", "bob"],
        }
        assert add["user_id"] == "$system"

        # Adding a member again changes nothing (no hook); a new role is a change of role.
        assert await add_members(registry(h), "room", ["bob"]) == []
        assert await add_members(registry(h), "room", ["bob"], role="admin") == []
        await wait_for_key_match(
            carol, table="$users", key="bob", match=lambda v: v["role"] == "admin", timeout=TIMEOUT
        )
        assert (await rows(carol, "log"))["add"]["count"] == 1

        await set_user_info(registry(h), "room", "bob", display_name="Bob B.")
        await wait_for_key_match(
            carol,
            table="$user_info",
            key="bob",
            match=lambda v: v["display_name"] == "Bob B.",
            timeout=TIMEOUT,
        )

        assert await remove_members(registry(h), "room", ["bob", "nobody"]) == ["bob"]
        await wait_for_key_deleted(carol, table="$users", key="bob", timeout=TIMEOUT)
        removed = await wait_for_key_exists(carol, table="log", key="remove", timeout=TIMEOUT)
        assert removed["users"] == ["bob"]
        assert removed["source"]["event"] == "remove_users"
        assert (await rows(carol, "$user_info"))["bob"]["display_name"] == "Bob B."  # kept
        assert [m["user_id"] for m in await list_members(registry(h), "room")] == ["alice"]


async def test_members_api_refuses_bad_input_and_missing_instances(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        reg = registry(h)
        for bad in (["a/b"], [""], ["x" * 129], "alice"):
            with pytest.raises(ValidationError):
                await add_members(reg, "room", bad)
        with pytest.raises(ValidationError):
            await add_members(reg, "room", ["alice"], role="")
        with pytest.raises(InstanceUnavailableError):
            await remove_members(reg, "missing", ["alice"])
        with pytest.raises(InstanceUnavailableError):
            await list_members(reg, "missing")
        assert not has_file(h, "missing")
        await add_members(reg, "room", ["alice"])
        with pytest.raises(ValidationError):
            await set_user_info(reg, "room", "alice", display_name="x" * 201)


async def test_auto_join_makes_every_connecting_user_a_member(tmp_path: Path) -> None:
    async with await create_test_harness(auto_join, data_dir=tmp_path) as h:
        alice = await h.create_client("alice", instance_id="room")
        await wait_for_key_exists(alice, table="$users", key="alice", timeout=TIMEOUT)
        await h.create_client("bob", instance_id="room")
        bob = await wait_for_key_exists(alice, table="$users", key="bob", timeout=TIMEOUT)
        assert bob["role"] == "member"
        assert bob["added_by"] == "auto_join"
        add = await wait_for_key_match(
            alice, table="log", key="add", match=lambda v: v["users"] == ["bob"], timeout=TIMEOUT
        )
        assert add["count"] == 2
        assert add["source"]["event"] == "admit"
        assert add["user_id"] == "bob"  # the hook runs as the user who joined
        info = await wait_for_key_exists(alice, table="$user_info", key="bob", timeout=TIMEOUT)
        assert info["display_name"] == "bob"


async def test_on_init_runs_exactly_once_across_restarts(tmp_path: Path) -> None:
    async with await create_test_harness(members_only, data_dir=tmp_path) as h:
        bob = await h.create_client("bob", instance_id="room")
        init = await wait_for_key_exists(bob, table="log", key="init", timeout=TIMEOUT)
        assert init["source"] == {"type": "system", "event": "init", "created_by": "bob"}
        assert init["user_id"] == "bob"
        assert init["is_system"] is True
        await add_members(registry(h), "room", ["alice"])
        for _ in range(2):
            await h.restart_server()
            alice = await h.create_client("alice", instance_id="room")
            await wait_for_key_exists(alice, table="$users", key="alice", timeout=TIMEOUT)
            assert (await rows(alice, "log"))["init"]["count"] == 1
            await add_members(registry(h), "room", ["carol"])  # after a restart: no init again
            assert (await rows(alice, "log"))["init"]["count"] == 1


async def test_on_init_runs_once_with_two_servers_on_postgres(pg_dsn: str, tmp_path: Path) -> None:
    """Two registries (two processes' worth) open the same new instance at once."""
    a = await create_test_harness(backend, data_dir=tmp_path / "a", database=pg_dsn)
    b = await create_test_harness(backend, data_dir=tmp_path / "b", database=pg_dsn)
    try:
        clients = await asyncio.gather(
            *(h.create_client(f"u{i}", instance_id="pg-room") for i, h in enumerate((a, b, a, b)))
        )
        await add_members(registry(b), "pg-room", ["dora"])
        for c in clients:
            await wait_for_key_exists(c, table="$users", key="dora", timeout=TIMEOUT)
            assert (await rows(c, "log"))["init"]["count"] == 1
        await a.restart_server()
        c = await a.create_client("u9", instance_id="pg-room")
        await add_members(registry(a), "pg-room", ["erin"])
        await wait_for_key_exists(c, table="$users", key="erin", timeout=TIMEOUT)
        assert (await rows(c, "log"))["init"]["count"] == 1
    finally:
        await a.dispose()
        await b.dispose()


async def test_clients_cannot_write_system_tables(tmp_path: Path) -> None:
    async with await create_test_harness(auto_join, data_dir=tmp_path) as h:
        alice = await h.create_client("alice", instance_id="room")
        await wait_for_key_exists(alice, table="$users", key="alice", timeout=TIMEOUT)
        with pytest.raises(PermissionDeniedError, match="system table"):
            await alice.mutate.hackUsers(user_id="mallory")
        # A mutator that writes one only on the server is rejected there; nothing changed.
        res = await alice.mutate.hackUsersOnServer(user_id="alice")
        with pytest.raises(MutationFailedError, match="system table"):
            await res.confirmed
        await alice.mutate.addNote(id="after", text="x")
        await wait_for_key_exists(alice, table="notes", key="after", timeout=TIMEOUT)
        assert set(await rows(alice, "$users")) == {"alice"}

        async def private_users(ctx: Any) -> Any:
            return await ctx.private_of_user("alice").table("$users").entries()

        with pytest.raises(PermissionDeniedError):
            await alice.query(private_users)


async def test_subscribe_to_table_reports_members(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        alice = await h.create_client("alice", instance_id="room")
        seen: list[dict[str, list[str]]] = []
        alice.subscribe_to_table("$users", lambda entries, changes: seen.append(changes))
        await add_members(registry(h), "room", ["zoe"])

        await wait_for_key_exists(alice, table="$users", key="zoe", timeout=TIMEOUT)
        await alice.wait_until(lambda: any(c["added"] == ["zoe"] for c in seen), timeout=TIMEOUT)


async def test_a_client_with_only_the_client_config_reads_members(tmp_path: Path) -> None:
    from synced_store import define_client_config

    from .members_app import MUTATORS, schema

    client_config = define_client_config(schema=schema, mutators=MUTATORS)
    async with await create_test_harness(auto_join, data_dir=tmp_path) as h:
        c = await connect(h.url, client_config, instance_id="room", token="kim")
        h.clients.append(c)
        await wait_for_key_exists(c, table="$users", key="kim", timeout=TIMEOUT)
