"""The todo agent (examples/todo/agent.py, the runnable example of docs/ai.md): a model's tool
calls become mutations another client sees; results go back to the model; the reply streams."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from synced_store.bot import BotConfig, OpenAICompatibleBot, make_bot_service
from synced_store.testing import (
    create_test_harness,
    sequential_responses,
    text_response,
    tool_call,
    wait_for_key_exists,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.todo.agent import run_agent  # noqa: E402
from examples.todo.app import backend  # noqa: E402
from tests.bot.fake_openai import FakeOpenAI, Turn, fake_openai_server  # noqa: E402

pytestmark = pytest.mark.e2e


async def test_the_local_bot_offline(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        alice, bob = await h.create_client("alice"), await h.create_client("bob")
        bot = make_bot_service(BotConfig(provider="local", pace=0))
        steps: list[str] = []
        reply = await run_agent(
            alice, bot, '/addTodo {"id": "t1", "text": "buy milk"}', on_text=steps.append
        )
        assert reply == "Done: addTodo."
        assert steps[-1] == reply
        row = await wait_for_key_exists(bob, table="todos", key="t1")
        assert row["text"] == "buy milk"


async def test_a_model_over_http_reads_and_writes(tmp_path: Path) -> None:
    """The OpenAI-compatible provider against a real server streaming tool_calls deltas."""
    turns = [
        Turn(
            chunks=["Adding", " it."],
            tool_calls=[
                {"id": "c1", "name": "addTodo", "arguments": '{"id": "t9", "text": "eggs"}'},
                {"id": "c2", "name": "addTodo", "arguments": '{"id": "t10", "text": ""}'},
            ],
        ),
        Turn(chunks=["Added", " eggs;", " the empty one was refused."]),
    ]
    async with fake_openai_server(FakeOpenAI(turns=turns)) as llm:
        bot = make_bot_service(OpenAICompatibleBot(base_url=llm.base_url, model="m"))
        async with await create_test_harness(backend, data_dir=tmp_path) as h:
            alice, bob = await h.create_client("alice"), await h.create_client("bob")
            reply = await run_agent(alice, bot, "add eggs")
            assert reply == "Added eggs; the empty one was refused."
            assert (await wait_for_key_exists(bob, table="todos", key="t9"))["text"] == "eggs"
            todos = await bob.query(lambda ctx: ctx.table("todos").keys())
            assert [k.item_key for k in todos] == ["t9"]
    second = llm.requests[1]["messages"]
    assert second[2]["tool_calls"][0]["function"]["name"] == "addTodo"
    assert second[3] == {
        "role": "tool",
        "content": '{"committed":true,"mutator":"addTodo"}',
        "tool_call_id": "c1",
    }
    assert second[4]["tool_call_id"] == "c2"
    assert second[4]["content"].startswith("Error (invalid_input): invalid input for mutator")
    assert [t["function"]["name"] for t in llm.requests[0]["tools"]] == [
        "addTodo",
        "setDone",
        "deleteTodo",
        "get",
        "scan",
    ]


async def test_a_scripted_bot_reads_the_list(tmp_path: Path) -> None:
    bot = sequential_responses(
        text_response(tool_calls=[tool_call("scan", {"table": "todos"})]),
        "You have one todo.",
    )
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        alice = await h.create_client("alice")
        await (await alice.mutate.addTodo(id="a", text="one")).confirmed
        assert await run_agent(alice, bot, "what is on my list?") == "You have one todo."
    tool_message = bot.requests[1].messages[-1]
    assert tool_message.role == "tool"
    assert '"key":"a"' in tool_message.content
