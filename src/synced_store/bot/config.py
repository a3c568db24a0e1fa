"""Choosing a provider (arguments or environment) and building the ``bot.stream`` service."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Bot, BotError, StreamItem, parse_request
from .local import LocalBot, ToolPlanner
from .openai_compat import DEFAULT_BASE_URL, DEFAULT_MODEL, OpenAICompatibleBot

__all__ = ["PROVIDERS", "BotConfig", "make_bot", "make_bot_service"]

PROVIDERS = ("local", "openai")
BotService = Callable[[Any], AsyncIterator[StreamItem]]


@dataclass(frozen=True)
class BotConfig:
    """Which provider to use and its settings.

    Environment (used by :meth:`from_env` for anything not given explicitly):
    ``SYNCED_STORE_BOT_PROVIDER`` (``local`` | ``openai``), ``SYNCED_STORE_BOT_PACE``,
    ``SYNCED_STORE_BOT_WORDS``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_MODEL``.
    """

    provider: str = "local"
    pace: float = 0.05
    words: int = 60
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = None
    model: str = DEFAULT_MODEL
    system_prompt: str | None = None
    timeout: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> BotConfig:
        """A config from ``env`` (default ``os.environ``); non-None ``overrides`` win."""
        e = os.environ if env is None else env
        values: dict[str, Any] = {
            "provider": e.get("SYNCED_STORE_BOT_PROVIDER", "local"),
            "pace": float(e.get("SYNCED_STORE_BOT_PACE", "0.05")),
            "words": int(e.get("SYNCED_STORE_BOT_WORDS", "60")),
            "base_url": e.get("OPENAI_BASE_URL", DEFAULT_BASE_URL),
            "api_key": e.get("OPENAI_API_KEY") or None,
            "model": e.get("OPENAI_MODEL", DEFAULT_MODEL),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def describe(self) -> str:
        """A one-line human description (no secrets)."""
        if self.provider == "openai":
            return f"openai-compatible {self.base_url} model={self.model}"
        return f"local deterministic bot ({self.pace}s per word, {self.words} words)"


def make_bot(config: BotConfig, *, planner: ToolPlanner | None = None) -> Bot:
    """The provider for ``config``; raises :class:`ValueError` for an unknown provider.

    ``planner`` decides the local bot's tool calls (:class:`LocalBot`); a real model decides
    its own."""
    provider = config.provider.lower()
    if provider in ("local", "fake"):
        if planner is None:
            return LocalBot(pace=config.pace, words=config.words)
        return LocalBot(pace=config.pace, words=config.words, planner=planner)
    if provider in ("openai", "openai-compatible"):
        return OpenAICompatibleBot(
            base_url=config.base_url,
            model=config.model,
            api_key=config.api_key,
            system_prompt=config.system_prompt,
            timeout=config.timeout,
        )
    raise ValueError(f"unknown bot provider {config.provider!r} (choose from {PROVIDERS})")


def make_bot_service(
    config: BotConfig | Bot | None = None, *, planner: ToolPlanner | None = None
) -> BotService:
    """The ``bot.stream`` service: ``input -> async iterator of text chunks (and tool calls)``.

    ``config`` is a :class:`BotConfig`, a ready :class:`Bot`, or None (``BotConfig.from_env()``);
    ``planner`` goes to the local bot (:func:`make_bot`).
    """
    if config is None:
        config = BotConfig.from_env()
    bot = make_bot(config, planner=planner) if isinstance(config, BotConfig) else config

    async def bot_stream(data: Any) -> AsyncIterator[StreamItem]:
        request = parse_request(data)
        try:
            async for chunk in bot.stream(request):
                yield chunk
        except BotError:
            raise
        except Exception as exc:  # a provider bug: still a clear BotError for the action
            raise BotError(f"bot provider failed: {type(exc).__name__}: {exc}") from exc

    return bot_stream
