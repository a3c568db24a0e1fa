"""The OpenAI-compatible client against a real streaming HTTP server on 127.0.0.1."""

from __future__ import annotations

import pytest

from synced_store.bot import (
    BotConfig,
    BotError,
    BotRequest,
    ChatMessage,
    OpenAICompatibleBot,
    ToolCall,
    make_bot_service,
    parse_request,
)
from synced_store.testing import free_port

from .fake_openai import FakeOpenAI, Turn, fake_openai_server

pytestmark = pytest.mark.e2e

REQ = BotRequest(bot_name="gpt", messages=(ChatMessage("user", "hi"),))


async def test_streams_deltas_to_done_with_auth_and_model() -> None:
    async with fake_openai_server(FakeOpenAI(chunks=["Hel", "lo", " there"])) as srv:
        bot = OpenAICompatibleBot(
            base_url=srv.base_url, model="tiny", api_key="sk-test", system_prompt="be brief"
        )
        chunks = [c async for c in bot.stream(REQ)]
    assert chunks == ["Hel", "lo", " there"]
    body = srv.requests[0]
    assert body["stream"] is True
    assert body["model"] == "tiny"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert srv.headers[0]["authorization"] == "Bearer sk-test"


async def test_service_from_config_uses_the_server() -> None:
    async with fake_openai_server(FakeOpenAI(chunks=["a", "b"])) as srv:
        service = make_bot_service(BotConfig(provider="openai", base_url=srv.base_url, model="m"))
        chunks = [
            c
            async for c in service({"botName": "x", "messages": [{"role": "user", "content": "q"}]})
        ]
    assert chunks == ["a", "b"]
    assert "authorization" not in srv.headers[0]


@pytest.mark.parametrize(
    ("state", "match"),
    [
        (FakeOpenAI(status=500), "HTTP 500: the model is overloaded"),
        (FakeOpenAI(status=401), "HTTP 401"),
        (FakeOpenAI(chunks=["a", "b", "c"], cut_after=2), "ended before \\[DONE\\]"),
        (FakeOpenAI(chunks=["a", "b", "c"], error_after=1), "boom mid-stream"),
    ],
)
async def test_provider_errors_raise_bot_error(state: FakeOpenAI, match: str) -> None:
    async with fake_openai_server(state) as srv:
        bot = OpenAICompatibleBot(base_url=srv.base_url)
        with pytest.raises(BotError, match=match):
            async for _ in bot.stream(REQ):
                pass


async def test_unreachable_server_is_a_bot_error() -> None:
    bot = OpenAICompatibleBot(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    with pytest.raises(BotError, match="ConnectError"):
        async for _ in bot.stream(REQ):
            pass


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "createTodoList",
            "description": "Create a todo list",
            "parameters": {"type": "object", "properties": {"title": {"type": "string"}}},
        },
    }
]


async def test_tools_are_sent_and_streamed_tool_calls_parsed() -> None:
    calls = [
        {"id": "call_1", "name": "createTodoList", "arguments": '{"title": "Trip", "items": []}'},
        {"id": "call_2", "name": "createTodoList", "arguments": '{"title": "Shopping list"}'},
    ]
    state = FakeOpenAI(turns=[Turn(chunks=["On it."], tool_calls=calls)])
    async with fake_openai_server(state) as srv:
        bot = OpenAICompatibleBot(base_url=srv.base_url, model="m")
        request = BotRequest(bot_name="gpt", messages=REQ.messages, tools=tuple(TOOLS))
        items = [c async for c in bot.stream(request)]
    assert items == [
        "On it.",
        ToolCall("call_1", "createTodoList", '{"title": "Trip", "items": []}'),
        ToolCall("call_2", "createTodoList", '{"title": "Shopping list"}'),
    ]
    assert srv.requests[0]["tools"] == TOOLS


async def test_tool_results_go_back_in_the_chat_completions_format() -> None:
    state = FakeOpenAI(turns=[Turn(chunks=["Created", " it."])])
    request = parse_request(
        {
            "botName": "gpt",
            "messages": [
                {"role": "user", "content": "make a list"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "createTodoList", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": '{"committed":true}'},
            ],
            "tools": TOOLS,
        }
    )
    async with fake_openai_server(state) as srv:
        bot = OpenAICompatibleBot(base_url=srv.base_url, model="m")
        assert [c async for c in bot.stream(request)] == ["Created", " it."]
    assert srv.requests[0]["messages"] == [
        {"role": "user", "content": "make a list"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "createTodoList", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "content": '{"committed":true}', "tool_call_id": "call_1"},
    ]


async def test_a_tool_call_without_a_name_is_a_bot_error() -> None:
    state = FakeOpenAI(turns=[Turn(tool_calls=[{"id": "c", "name": "", "arguments": "{}"}])])
    async with fake_openai_server(state) as srv:
        bot = OpenAICompatibleBot(base_url=srv.base_url)
        with pytest.raises(BotError, match="without a function name"):
            async for _ in bot.stream(REQ):
                pass
