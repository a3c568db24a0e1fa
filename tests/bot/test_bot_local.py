"""The deterministic local bot and the ``bot.stream`` service factory."""

from __future__ import annotations

import pytest

from synced_store.bot import (
    BotConfig,
    BotError,
    BotRequest,
    ChatMessage,
    LocalBot,
    local_reply,
    make_bot,
    make_bot_service,
    parse_request,
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
