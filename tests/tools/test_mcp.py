"""A real MCP client (the official SDK's, over stdio and over Streamable HTTP) lists an app's
tools, calls them, and an ordinary synced-store client sees the rows arrive; invalid input and
refused authorization come back as tool errors and change nothing."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from synced_store.server.auth import Access
from synced_store.testing import create_test_harness, text_response, wait_for_key_exists

from .mcp_clients import REPO, TRANSPORTS, mcp_client, result_text
from .notes_app import backend as notes_backend

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import make_backend
from examples.todo.app import backend as todo_backend

pytestmark = pytest.mark.e2e

TODO = "examples.todo.app:backend"
NOTES = "tests.tools.notes_app:backend"


def deny_mallory(user_id: str, instance_id: str, claims: Any) -> Access:
    return Access.DENY if user_id == "mallory" else Access.CREATE


async def todos(ctx: Any) -> dict[str, Any]:
    return {k.item_key: v for k, v in await ctx.table("todos").entries()}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_todo_tools_over_mcp(tmp_path: Path, transport: str) -> None:
    async with await create_test_harness(
        todo_backend, data_dir=tmp_path, instance_id="list", mcp=True, authorize=deny_mallory
    ) as h:
        bob = await h.create_client("bob")
        async with mcp_client(h, transport, TODO, user="alice", instance="list") as client:
            listed = (await client.list_tools()).tools
            assert [t.name for t in listed] == ["addTodo", "setDone", "deleteTodo", "get", "scan"]
            add = listed[0]
            assert add.description == "Add a todo (or update its text if it exists)."
            assert add.input_schema["required"] == ["id", "text"]

            res = await client.call_tool("addTodo", {"id": "t1", "text": "buy milk"})
            assert not res.is_error, result_text(res)
            assert res.structured_content == {"committed": True, "mutator": "addTodo"}
            row = await wait_for_key_exists(bob, table="todos", key="t1", timeout=10)
            assert row["text"] == "buy milk"
            assert row["done"] is False

            res = await client.call_tool("addTodo", {"id": "t2", "text": ""})
            assert res.is_error
            assert "invalid input for mutator 'addTodo'" in result_text(res)
            assert "at least 1 character" in result_text(res)

            res = await client.call_tool("setDone", {"id": "t1", "done": True})
            assert not res.is_error
            res = await client.call_tool("scan", {"table": "todos"})
            rows = json.loads(result_text(res))["rows"]
            assert [(r["key"], r["value"]["done"]) for r in rows] == [("t1", True)]

        async with mcp_client(h, transport, TODO, user="mallory", instance="list") as client:
            res = await client.call_tool("deleteTodo", {"id": "t1"})
            assert res.is_error
            text = result_text(res)
            assert "not authorized" in text or "auth_failed" in text, text
            res = await client.call_tool("addTodo", {"id": "m1", "text": "evil"})
            assert res.is_error
        # A round trip of bob's orders us after anything the MCP clients could have done.
        await (await bob.mutate.addTodo(id="b1", text="bob's")).confirmed
        assert sorted(await bob.query(todos)) == ["b1", "t1"]
        assert (await bob.query(todos))["t1"]["done"] is True


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_mutator_refusals_are_tool_errors(tmp_path: Path, transport: str) -> None:
    async with await create_test_harness(
        notes_backend, data_dir=tmp_path, instance_id="pad", mcp=True
    ) as h:
        alice = await h.create_client("alice")
        await (await alice.mutate.addNote(id="n1", text="alice's note")).confirmed
        async with mcp_client(h, transport, NOTES, user="bob", instance="pad") as client:
            res = await client.call_tool("deleteNote", {"id": "n1"})
            assert res.is_error
            assert "only alice may delete note n1" in result_text(res)
            res = await client.call_tool("addNote", {"id": "b1", "text": "forbidden words"})
            assert res.is_error  # refused by the server's own check, rolled back
            assert "the server refuses forbidden words" in result_text(res)
            res = await client.call_tool("wordCount", {"id": "n1"})
            assert not res.is_error
            assert res.structured_content == {"result": 2}
            res = await client.call_tool("search", {"table": "notes", "query": "ALICE"})
            assert [r["key"] for r in res.structured_content["rows"]] == ["n1"]
        await (await alice.mutate.addNote(id="n2", text="later")).confirmed
        rows = await alice.query(lambda ctx: ctx.table("notes").keys())
        assert [k.item_key for k in rows] == ["n1", "n2"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tables_are_resources_with_subscriptions(tmp_path: Path, transport: str) -> None:
    async with await create_test_harness(
        todo_backend, data_dir=tmp_path, instance_id="list", mcp=True
    ) as h:
        bob = await h.create_client("bob")
        await (await bob.mutate.addTodo(id="t1", text="first")).confirmed
        uri = "synced-store://list/tables/todos"
        async with mcp_client(h, transport, TODO, user="alice", instance="list") as client:
            resources = (await client.list_resources()).resources
            assert [(r.uri, r.name) for r in resources] == [(uri, "todos")]
            read = await client.read_resource(uri)
            body = json.loads(read.contents[0].text)
            assert [r["key"] for r in body["rows"]] == ["t1"]
            async with client.listen(resource_subscriptions=[uri]) as sub:
                await bob.mutate.addTodo(id="t2", text="second")
                event = await asyncio.wait_for(anext(aiter(sub)), 10)
                assert event.uri == uri
            read = await client.read_resource(uri)
            assert [r["key"] for r in json.loads(read.contents[0].text)["rows"]] == ["t1", "t2"]


CHAT = "examples.chat.app:backend"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chat_tools_over_mcp(tmp_path: Path, transport: str) -> None:
    async with await create_test_harness(
        make_backend(text_response("unused")), data_dir=tmp_path, instance_id="room", mcp=True
    ) as h:
        alice = await h.create_client("alice")
        await (await alice.mutate.sendMessage(id="a1", text="alice was here")).confirmed
        async with mcp_client(h, transport, CHAT, user="bob", instance="room") as client:
            names = [t.name for t in (await client.list_tools()).tools]
            assert names == [
                "sendMessage",
                "cancelMessage",
                "deleteMessage",
                "createTodoList",
                "callBot",
                "get",
                "scan",
                "search",
            ]
            res = await client.call_tool("sendMessage", {"id": "m1", "text": "hello from MCP"})
            assert not res.is_error, result_text(res)
            row = await wait_for_key_exists(alice, table="messages", key="m1", timeout=10)
            assert row == {"id": "m1", "text": "hello from MCP", "role": "user", "senderId": "bob"}
            res = await client.call_tool(
                "createTodoList", {"id": "l1", "title": "Plan", "items": ["a", "b"]}
            )
            assert not res.is_error, result_text(res)
            todo = await wait_for_key_exists(alice, table="todoLists", key="l1", timeout=10)
            assert todo["createdBy"] == "bob"

            res = await client.call_tool("createTodoList", {"id": "l2", "title": "x", "items": []})
            assert res.is_error
            assert "items: List should have at least 1 item" in result_text(res)
            res = await client.call_tool("deleteMessage", {"id": "a1"})
            assert res.is_error
            assert "only its sender (alice) may delete message a1" in result_text(res)
            res = await client.call_tool("search", {"table": "messages", "query": "ALICE"})
            assert [r["key"] for r in res.structured_content["rows"]] == ["a1"]
        await (await alice.mutate.sendMessage(id="a2", text="still here")).confirmed
        assert sorted(await alice.query(lambda ctx: _keys(ctx, "messages"))) == ["a1", "a2", "m1"]
        assert await alice.query(lambda ctx: _keys(ctx, "todoLists")) == ["l1"]


async def _keys(ctx: Any, table: str) -> list[str]:
    return [k.item_key for k in await ctx.table(table).keys()]
