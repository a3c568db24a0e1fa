"""Tool calls on a real server through a client (``ClientTarget``): mutations that sync,
refusals that change nothing, and the bounded read tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from synced_store.testing import TestHarness, create_test_harness, wait_for_key_exists
from synced_store.tools import ClientTarget, ToolResult, define_tools, parse_arguments
from synced_store.tools.reads import MAX_ROWS

from .notes_app import backend

pytestmark = pytest.mark.e2e
TOOLS = define_tools(backend)


async def notes_of(ctx: Any) -> dict[str, Any]:
    return {k.item_key: v for k, v in await ctx.table("notes").entries()}


async def harness(tmp_path: Path) -> TestHarness:
    return await create_test_harness(backend, data_dir=tmp_path, instance_id="pad")


async def test_a_mutator_tool_commits_and_syncs(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice, bob = await h.create_client("alice"), await h.create_client("bob")
        res = await TOOLS.call(ClientTarget(alice), "addNote", {"id": "n1", "text": "hi there"})
        assert res == ToolResult(True, {"committed": True, "mutator": "addNote"})
        assert alice.pending_count == 0  # returned once the server committed it
        row = await wait_for_key_exists(bob, table="notes", key="n1")
        assert row == {"id": "n1", "text": "hi there", "createdAt": 0, "owner": "alice"}
        # Arguments as a model sends them: a JSON text.
        res = await TOOLS.call(ClientTarget(bob), "shout", '{"input": "hey"}')
        assert res.ok
        assert await wait_for_key_exists(alice, table="shouts", key="last") == {"text": "HEY"}


async def test_refusals_are_results_and_change_nothing(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice, bob = await h.create_client("alice"), await h.create_client("bob")
        await TOOLS.call(ClientTarget(alice), "addNote", {"id": "n1", "text": "mine"})
        before = await bob.query(notes_of)
        cases = [
            ("addNote", {"id": "n2", "text": ""}, "invalid_input", "at least 1 character"),
            ("addNote", "{not json", "invalid_input", "not valid JSON"),
            ("addNote", [1, 2], "invalid_input", "must be a JSON object"),
            ("shout", {"text": "x"}, "invalid_input", "takes one argument"),
            ("nope", {}, "unknown_name", "unknown tool"),
            ("scan", {"table": "secrets"}, "invalid_input", "not readable"),
            ("get", {"table": "notes"}, "invalid_input", "'key'"),
        ]
        for name, args, kind, message in cases:
            res = await TOOLS.call(ClientTarget(bob), name, args)
            assert not res.ok, name
            assert res.kind == kind, (name, res)
            assert message in (res.error or ""), (name, res)
        # Bob's client refuses at once what its rows show is not allowed (nothing pushed) ...
        res = await TOOLS.call(ClientTarget(bob), "deleteNote", {"id": "n1"})
        assert (res.ok, res.kind) == (False, "permission_denied")
        assert "only alice may delete note n1" in (res.error or "")
        assert res.text() == f"Error (permission_denied): {res.error}"
        assert await alice.query(notes_of) == before
        assert await bob.query(notes_of) == before
        # ... and an action that raises is reported with its message.
        res = await TOOLS.call(ClientTarget(bob), "wordCount", {"id": "zz"})
        assert (res.ok, res.kind) == (False, "action_failed")
        assert "no note zz" in (res.error or "")


async def test_a_server_refusal_rolls_the_optimistic_mutation_back(tmp_path: Path) -> None:
    """The client's optimistic pass accepts it; the server refuses: a tool error, no row."""
    async with await harness(tmp_path) as h:
        alice, bob = await h.create_client("alice"), await h.create_client("bob")
        res = await TOOLS.call(ClientTarget(bob), "addNote", {"id": "b1", "text": "forbidden"})
        assert (res.ok, res.kind) == (False, "permission_denied")
        assert res.error == "the server refuses forbidden words"
        assert bob.pending_count == 0
        await TOOLS.call(ClientTarget(alice), "addNote", {"id": "a1", "text": "fine"})
        await wait_for_key_exists(bob, table="notes", key="a1")
        assert set(await bob.query(notes_of)) == {"a1"}
        assert set(await alice.query(notes_of)) == {"a1"}


async def test_actions_and_wrapped_outputs(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        await TOOLS.call(ClientTarget(alice), "addNote", {"id": "n1", "text": "one two three"})
        res = await TOOLS.call(ClientTarget(alice), "wordCount", {"id": "n1"})
        assert res == ToolResult(True, {"result": 3})


async def test_read_tools(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        target = ClientTarget(alice)
        for i in range(5):
            text = f"note {i} about {'cats' if i % 2 else 'dogs'}"
            await TOOLS.call(target, "addNote", {"id": f"n{i}", "text": text, "createdAt": i})
        await TOOLS.call(target, "saveDraft", {"id": "d1", "text": "secret plan"})

        got = await TOOLS.call(target, "get", {"table": "notes", "key": "n3"})
        assert got.output == {
            "table": "notes",
            "key": "n3",
            "found": True,
            "value": {"id": "n3", "text": "note 3 about cats", "createdAt": 3, "owner": "alice"},
        }
        missing = await TOOLS.call(target, "get", {"table": "notes", "key": "zz"})
        assert missing.output["found"] is False

        page = await TOOLS.call(target, "scan", {"table": "notes", "limit": 2})
        assert [r["key"] for r in page.output["rows"]] == ["n0", "n1"]
        assert page.output["next"] == {"sortKey": "000000000001", "key": "n1"}
        rest = await TOOLS.call(
            target, "scan", {"table": "notes", "limit": 10, "after": page.output["next"]}
        )
        assert [r["key"] for r in rest.output["rows"]] == ["n2", "n3", "n4"]
        assert rest.output["next"] is None
        last = await TOOLS.call(target, "scan", {"table": "notes", "limit": 1, "reverse": True})
        assert [r["key"] for r in last.output["rows"]] == ["n4"]

        found = await TOOLS.call(target, "search", {"table": "notes", "query": "CATS"})
        assert [r["key"] for r in found.output["rows"]] == ["n3", "n1"]  # newest first
        assert found.output["truncated"] is False

        shared = await TOOLS.call(target, "get", {"table": "drafts", "key": "d1"})
        assert shared.output["found"] is False  # drafts are private rows
        own = await TOOLS.call(target, "get", {"table": "drafts", "key": "d1", "private": True})
        assert own.output["value"] == {"text": "secret plan"}
        bob = await h.create_client("bob")
        theirs = await TOOLS.call(
            ClientTarget(bob), "get", {"table": "drafts", "key": "d1", "private": True}
        )
        assert theirs.output["found"] is False  # bob reads his own private rows only


async def test_scan_results_are_bounded(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        for i in range(MAX_ROWS + 5):
            await alice.mutate.addNote(id=f"n{i:04d}", text="x" * 400, createdAt=i)
        await alice.wait_for_sync(timeout=10)
        res = await TOOLS.call(ClientTarget(alice), "scan", {"table": "notes", "limit": MAX_ROWS})
        assert len(res.output["rows"]) == MAX_ROWS
        assert res.output["next"] is not None
        too_many = await TOOLS.call(ClientTarget(alice), "scan", {"table": "notes", "limit": 10**6})
        assert too_many.kind == "invalid_input"
        assert len(json.dumps(res.output)) < 200_000


def test_parse_arguments() -> None:
    assert parse_arguments(None) == {}
    assert parse_arguments("") == {}
    assert parse_arguments('{"a": 1}') == {"a": 1}
    assert parse_arguments({"a": 1}) == {"a": 1}
