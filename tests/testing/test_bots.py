"""The scripted bots: text_response, text_responses, sequential_responses, error_response and
tool_call, alone, as a server's bot.stream (harness) and swapped while it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from synced_store import ActionError
from synced_store.bot import BotError, StreamedText, ToolCall
from synced_store.testing import (
    BotResponse,
    create_test_harness,
    error_response,
    sequential_responses,
    text_response,
    text_responses,
    tool_call,
    wait_for_key_match,
)

from .kit_app import backend

REQ = {"botName": "bot", "messages": [{"role": "user", "content": "hi"}]}


async def items(bot: object, request: object = REQ) -> list[object]:
    return [c async for c in bot(request)]  # type: ignore[operator]


async def test_text_response_streams_words_every_call() -> None:
    bot = text_response("Hello there world")
    assert await items(bot) == ["Hello", " there", " world"]
    assert await items(bot) == ["Hello", " there", " world"]
    assert bot.calls == 2
    assert bot.requests[0].prompt == "hi"
    assert await items(text_response(["Hel", "lo"])) == ["Hel", "lo"]
    assert await items(text_response("")) == []


async def test_text_responses_answer_in_order_then_fail() -> None:
    bot = text_responses(["one", "two words"])
    assert await items(bot) == ["one"]
    assert await items(bot) == ["two", " words"]
    with pytest.raises(BotError, match="no response for call 3"):
        await items(bot)


async def test_tool_calls_and_sequences() -> None:
    call = tool_call("createTodoList", {"title": "Trip"})
    assert call == tool_call("createTodoList", {"title": "Trip"})  # a stable id
    assert call.arguments == '{"title": "Trip"}'
    assert tool_call("x", '{"a": 1}', id="c9") == ToolCall("c9", "x", '{"a": 1}')
    bot = sequential_responses(
        text_response("Let me", tool_calls=[call]),
        "Done it.",
        BotResponse(items=("raw",)),
        error_response("overloaded"),
    )
    assert await items(bot) == ["Let", " me", call]
    assert await items(bot) == ["Done", " it."]
    assert await items(bot) == ["raw"]
    with pytest.raises(BotError, match="overloaded"):
        await items(bot)
    with pytest.raises(BotError, match="no response for call 5"):
        await items(bot)


async def test_error_response_after_some_text() -> None:
    bot = error_response("connection reset", after="partial answer")
    async with StreamedText(bot(REQ)) as reply:
        with pytest.raises(BotError, match="connection reset"):
            async for _ in reply:
                pass
    assert reply.text == "partial answer"


async def test_a_scripted_bot_behind_a_real_server(tmp_path: Path) -> None:
    bot = text_response("Streamed from a script", pace=0.001)
    async with await create_test_harness(backend, data_dir=tmp_path, bot=bot) as h:
        alice = await h.create_client("alice")
        await alice.mutate.ask(id="1", text="question one")
        done = await wait_for_key_match(
            alice, table="entries", key="1-a", match=lambda v: v["status"] == "done", timeout=10
        )
        assert done["text"] == "Streamed from a script"
        assert bot.requests[0].prompt == "question one"

        h.set_service("bot.stream", error_response("the model is down"))
        with pytest.raises(ActionError, match="the model is down"):
            await asyncio.wait_for(alice.action.answer(id="1"), 10)
        assert bot.calls == 1  # the new service answered
