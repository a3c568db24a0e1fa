"""``synced-store members``, ``schema`` and ``mutate`` against real servers and databases."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from synced_store.cli import cli
from synced_store.testing import create_test_harness, wait_for_key_exists

from .server.members_app import backend, members_only

TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))
APP = "tests.server.members_app:members_only"


async def run(*args: str) -> Result:
    """The CLI in a thread (its own event loop), as a user would run it next to a server."""
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), catch_exceptions=False)


async def outcome(h: Any, user: str, instance_id: str) -> str:
    client = await h.create_client(user, instance_id=instance_id, wait=False)
    await client.wait_until(
        lambda: client.end_reason is not None or client.has_server_data, timeout=TIMEOUT
    )
    return str(client.end_reason or "connected")


async def test_members_add_list_remove_on_sqlite_with_the_server_stopped(tmp_path: Path) -> None:
    async with await create_test_harness(members_only, data_dir=tmp_path) as h:
        h.allowed_errors.append("session ended by the server (auth_failed)")
        assert await outcome(h, "bob", "room") == "connected"
        assert await outcome(h, "alice", "room") == "auth_failed"
        await h.stop_server()
        r = await run(
            "members", "add", APP, "--data-dir", str(tmp_path), "room", "alice", "--role", "writer"
        )
        assert r.exit_code == 0, r.output
        assert "added 1 member(s) to room: alice" in r.output
        r = await run("members", "list", "--data-dir", str(tmp_path), "room", "--json")
        assert r.exit_code == 0, r.output
        rows = {m["user_id"]: m for m in json.loads(r.output)}
        assert rows["bob"]["role"] == "owner"
        assert rows["alice"]["role"] == "writer"
        r = await run("members", "list", "--data-dir", str(tmp_path), "room")
        assert "alice" in r.output
        assert "writer" in r.output
        await h.start_server()
        assert await outcome(h, "alice", "room") == "connected"
        await h.stop_server()
        r = await run("members", "remove", APP, "--data-dir", str(tmp_path), "room", "alice", "zed")
        assert r.exit_code == 0, r.output
        assert "removed 1 member(s) from room: alice" in r.output
        await h.start_server()
        assert await outcome(h, "alice", "room") == "auth_failed"


async def test_members_errors(tmp_path: Path) -> None:
    r = await run("members", "list", "--data-dir", str(tmp_path), "nowhere")
    assert r.exit_code == 1
    assert "no instance 'nowhere'" in r.output
    r = await run("members", "remove", APP, "--data-dir", str(tmp_path), "nowhere", "a")
    assert r.exit_code == 1
    assert "no instance 'nowhere'" in r.output
    r = await run("members", "add", APP, "--data-dir", str(tmp_path), "room", "a/b")
    assert r.exit_code == 1
    assert "invalid user id" in r.output
    r = await run(
        "members",
        "add",
        "tests.server.members_app:nothing",
        "--data-dir",
        str(tmp_path),
        "room",
        "a",
    )
    assert r.exit_code == 1
    assert "has no attribute" in r.output


async def test_members_add_on_postgres_is_seen_live_by_connected_clients(
    tmp_path: Path, pg_dsn: str
) -> None:
    async with await create_test_harness(members_only, data_dir=tmp_path, database=pg_dsn) as h:
        bob = await h.create_client("bob", instance_id="room")
        await wait_for_key_exists(bob, table="$users", key="bob", timeout=TIMEOUT)
        r = await run("members", "add", APP, "--database", pg_dsn, "room", "carol")
        assert r.exit_code == 0, r.output
        await wait_for_key_exists(bob, table="$users", key="carol", timeout=TIMEOUT)
        await wait_for_key_exists(bob, table="$user_info", key="carol", timeout=TIMEOUT)
        added = await wait_for_key_exists(bob, table="log", key="add", timeout=TIMEOUT)
        assert added["count"] == 2  # bob (the creator), then carol from the CLI
        assert added["users"] == ["carol"]


async def test_schema_prints_tables_mutators_and_their_input_schemas() -> None:
    r = await run("schema", "tests.server.members_app:backend", "--json")
    assert r.exit_code == 0, r.output
    desc = json.loads(r.output)
    assert desc["schema_version"] == 1
    assert set(desc["tables"]) == {"notes", "log"}
    assert desc["tables"]["notes"]["value"]["properties"]["text"]["type"] == "string"
    note = desc["mutators"]["addNote"]["input"]
    assert set(note["properties"]) == {"id", "text"}
    assert note["required"] == ["id", "text"]
    assert set(desc["system_tables"]) == {"$users", "$user_info"}
    r = await run("schema", "tests.client.split_app.client:client_config")
    assert r.exit_code == 0, r.output
    assert "addItem" in r.output
    assert "shout" in r.output  # actions are declared in the schema
    r = await run("schema", "tests.server.members_app:MUTATORS")
    assert r.exit_code == 1
    assert "not a BackendConfig, ClientConfig or Schema" in r.output


async def test_mutate_runs_a_mutation_and_waits_for_its_confirmation(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        watcher = await h.create_client("watcher", instance_id="room")
        base = ["mutate", "--app", "tests.server.members_app:backend", "--url", h.url]
        base += ["--instance", "room", "--token", "alice"]
        r = await run(*base, "addNote", '{"id": "n1", "text": "from the CLI"}')
        assert r.exit_code == 0, r.output
        assert "confirmed addNote" in r.output
        await wait_for_key_exists(watcher, table="notes", key="n1", timeout=TIMEOUT)

        r = await run(*base, "nope", "{}")
        assert r.exit_code == 1
        assert (
            "unknown mutator 'nope' (mutators: addNote, hackUsers, hackUsersOnServer)" in r.output
        )
        r = await run(*base, "addNote", '{"id": "n2"}')
        assert r.exit_code == 1
        assert "invalid input for mutator 'addNote'" in r.output
        r = await run(*base, "addNote", "{not json")
        assert r.exit_code == 1
        assert "not valid JSON" in r.output
        r = await run(*base, "hackUsersOnServer", '{"user_id": "alice"}')
        assert r.exit_code == 1
        assert "the server rejected hackUsersOnServer" in r.output
        assert "system table" in r.output


async def test_mutate_reports_a_refused_connection(tmp_path: Path) -> None:
    async with await create_test_harness(members_only, data_dir=tmp_path) as h:
        h.allowed_errors.append("not a member")
        await h.create_client("bob", instance_id="room")
        r = await run(
            "mutate",
            "--app",
            APP,
            "--url",
            h.url,
            "--instance",
            "room",
            "--token",
            "eve",
            "addNote",
            '{"id": "x", "text": "y"}',
        )
        assert r.exit_code == 1
        assert "the server closed the connection: auth_failed" in r.output
