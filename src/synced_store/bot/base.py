"""The bot interface: a request (bot name and chat history) in, text chunks out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Bot", "BotError", "BotRequest", "ChatMessage", "parse_request"]


class BotError(Exception):
    """A provider failed (unreachable, HTTP error, malformed stream, error event)."""


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation sent to the model."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class BotRequest:
    """What the ``bot.stream`` service receives."""

    bot_name: str
    messages: tuple[ChatMessage, ...] = field(default_factory=tuple)

    @property
    def prompt(self) -> str:
        """The text of the last user message ("" if none)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""


class Bot(Protocol):
    """A streaming bot."""

    def stream(self, request: BotRequest) -> AsyncIterator[str]:
        """Yield the reply's text chunks in order (deltas, not the text so far)."""
        ...


def parse_request(data: Any) -> BotRequest:
    """Build a :class:`BotRequest` from the service input
    ``{"botName": str, "messages": [{"role": str, "content": str}, ...]}`` (or a ``BotRequest``).
    """
    if isinstance(data, BotRequest):
        return data
    if not isinstance(data, Mapping):
        raise BotError(f"bot.stream input must be an object, got {type(data).__name__}")
    name = data.get("botName", data.get("bot_name", "bot"))
    raw = data.get("messages", [])
    if not isinstance(name, str) or not isinstance(raw, list):
        raise BotError("bot.stream input: botName must be a string and messages a list")
    msgs = []
    for m in raw:
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise BotError("bot.stream input: each message needs a string 'content'")
        msgs.append(ChatMessage(role=str(m.get("role", "user")), content=m["content"]))
    return BotRequest(bot_name=name, messages=tuple(msgs))
