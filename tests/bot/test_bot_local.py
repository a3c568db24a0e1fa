"""The deterministic local bot and the ``bot.stream`` service factory."""

from __future__ import annotations

import pytest

from synced_store.bot import (
    BotConfig,
    BotError,
    BotRequest,
    ChatMessage,
    LocalBot,
    ToolCall,
    command_planner,
    local_reply,
    make_bot,
    make_bot_service,
    parse_request,
    tool_summary,
)


def _req(prompt: str) -> BotRequest:
    return BotRequest(bot_name="bot", messages=(ChatMessage("user", prompt),))


async def test_local_bot_is_deterministic_and_streams_words() -> None:
    bot = LocalBot(pace=0, words=25)
    a = [c async for c in bot.stream(_req("tell me a story"))]
    b = [c async for c in bot.stream(_req("tell me a story"))]
    assert a == b
    assert len(a) == 25
    assert "".join(a) == local_reply("tell me a story", words=25)
    assert all(c.startswith(" ") for c in a[1:])
    assert local_reply("something else", words=25) != "".join(a)


async def test_local_bot_can_fail_after_some_chunks() -> None:
    bot = LocalBot(pace=0, words=10, fail_after=3)
    got: list[str] = []

    async def consume() -> None:
        async for c in bot.stream(_req("x")):
            got.append(c)

    with pytest.raises(BotError, match="after 3 chunks"):
        await consume()
    assert len(got) == 3


def test_config_from_env_and_overrides() -> None:
    env = {
        "SYNCED_STORE_BOT_PROVIDER": "openai",
        "OPENAI_BASE_URL": "http://h:1/v1",
        "OPENAI_API_KEY": "k",
        "OPENAI_MODEL": "m",
        "SYNCED_STORE_BOT_PACE": "0.2",
    }
    cfg = BotConfig.from_env(env)
    assert (cfg.provider, cfg.base_url, cfg.api_key, cfg.model, cfg.pace) == (
        "openai",
        "http://h:1/v1",
        "k",
        "m",
        0.2,
    )
    assert BotConfig.from_env(env, provider="local", pace=None).provider == "local"
    assert BotConfig.from_env({}).provider == "local"
    assert "k" not in cfg.describe()
    with pytest.raises(ValueError, match="unknown bot provider"):
        make_bot(BotConfig(provider="nope"))


async def test_service_takes_the_wire_input_and_wraps_provider_bugs() -> None:
    service = make_bot_service(BotConfig(pace=0, words=5))
    chunks = [
        c
        async for c in service({"botName": "bot", "messages": [{"role": "user", "content": "hi"}]})
    ]
    assert "".join(chunks) == local_reply("hi", words=5)

    class Broken:
        async def stream(self, request: BotRequest):
            yield "a"
            raise RuntimeError("oops")

    with pytest.raises(BotError, match="RuntimeError: oops"):
        async for _ in make_bot_service(Broken())({"botName": "b", "messages": []}):
            pass
    with pytest.raises(BotError):
        parse_request({"botName": "b", "messages": [{"role": "user"}]})
    with pytest.raises(BotError):
        parse_request("nope")


TOOL = {"type": "function", "function": {"name": "addTodo", "parameters": {"type": "object"}}}


def _tool_req(prompt: str, *, tools: bool = True) -> BotRequest:
    return BotRequest(
        bot_name="bot", messages=(ChatMessage("user", prompt),), tools=(TOOL,) if tools else ()
    )


async def test_local_bot_calls_an_offered_tool_by_command() -> None:
    bot = LocalBot(pace=0, words=5)
    items = [c async for c in bot.stream(_tool_req('/addTodo {"text": "milk"}'))]
    assert len(items) == 1
    call = items[0]
    assert isinstance(call, ToolCall)
    assert (call.name, call.arguments) == ("addTodo", '{"text": "milk"}')
    # The same conversation asks the same call (a rerun of the action is deterministic).
    again = [c async for c in bot.stream(_tool_req('/addTodo {"text": "milk"}'))]
    assert again == items
    # Not offered, or not a command: text, as before.
    for req in (_tool_req('/addTodo {"text": "milk"}', tools=False), _tool_req("/other {}")):
        text = [c async for c in bot.stream(req)]
        assert all(isinstance(c, str) for c in text)
    assert command_planner(_tool_req("/addTodo")) == [
        ToolCall(command_planner(_tool_req("/addTodo"))[0].id, "addTodo", "{}")
    ]


async def test_local_bot_sums_up_tool_results() -> None:
    call = ToolCall("c1", "addTodo", "{}")
    failed = ToolCall("c2", "setDone", "{}")
    req = BotRequest(
        bot_name="bot",
        messages=(
            ChatMessage("user", "/addTodo {}"),
            ChatMessage("assistant", "", tool_calls=(call, failed)),
            ChatMessage("tool", '{"committed":true}', tool_call_id="c1"),
            ChatMessage("tool", "Error (invalid_input): bad", tool_call_id="c2"),
        ),
        tools=(TOOL,),
    )
    text = "".join([c async for c in LocalBot(pace=0).stream(req)])
    assert text == "Done: addTodo. setDone failed: Error (invalid_input): bad."
    assert tool_summary(req) == text


async def test_a_custom_planner_and_a_planner_writing_bad_json() -> None:
    def planner(request: BotRequest) -> list[ToolCall]:
        return [ToolCall("x", "addTodo", "{not json")]

    with pytest.raises(BotError, match="invalid JSON arguments for addTodo"):
        async for _ in LocalBot(pace=0, planner=planner).stream(_tool_req("anything")):
            pass
    service = make_bot_service(
        BotConfig(pace=0), planner=lambda r: [ToolCall("y", "addTodo", "{}")]
    )
    items = [c async for c in service({"botName": "b", "messages": [], "tools": [TOOL]})]
    assert items == [ToolCall("y", "addTodo", "{}")]
