"""The bot interface: a request (bot name, chat history, tools) in, text chunks and tool calls
out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Bot",
    "BotError",
    "BotRequest",
    "ChatMessage",
    "StreamItem",
    "ToolCall",
    "parse_request",
]


class BotError(Exception):
    """A provider failed (unreachable, HTTP error, malformed stream, error event)."""


@dataclass(frozen=True)
class ToolCall:
    """A call the model asks for: ``name`` with ``arguments`` (the JSON text it wrote) and the
    ``id`` its result must be sent back with."""

    id: str
    name: str
    arguments: str = "{}"

    def to_openai(self) -> dict[str, Any]:
        """The chat-completions form (an assistant message's ``tool_calls`` entry)."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


#: What a bot's stream yields: text deltas, and tool calls once the model finished asking.
StreamItem = str | ToolCall


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation sent to the model.

    ``role`` is ``system``, ``user``, ``assistant`` or ``tool``. An assistant message may carry
    the ``tool_calls`` it made; a ``tool`` message is the result (``content``) of the call
    ``tool_call_id``.
    """

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def to_openai(self) -> dict[str, Any]:
        """The chat-completions form of the message."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True)
class BotRequest:
    """What the ``bot.stream`` service receives. ``tools`` are chat-completions tool
    definitions (``synced_store.tools.ToolSet.openai()``) the model may call."""

    bot_name: str
    messages: tuple[ChatMessage, ...] = field(default_factory=tuple)
    tools: tuple[Mapping[str, Any], ...] = ()

    @property
    def prompt(self) -> str:
        """The text of the last user message ("" if none)."""
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return ""

    def tool_names(self) -> list[str]:
        """The names of the offered tools."""
        return [str(t.get("function", {}).get("name", "")) for t in self.tools]


class Bot(Protocol):
    """A streaming bot."""

    def stream(self, request: BotRequest) -> AsyncIterator[StreamItem]:
        """Yield the reply's text chunks in order (deltas, not the text so far), then the tool
        calls the model asks for, if any (the reply ends there: run them and ask again)."""
        ...


def _tool_calls(raw: Any) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise BotError("bot.stream input: tool_calls must be a list")
    calls = []
    for c in raw:
        if isinstance(c, ToolCall):
            calls.append(c)
            continue
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise BotError("bot.stream input: each tool call needs a function name")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            args = json.dumps(args)
        calls.append(ToolCall(id=str(c.get("id", "")), name=fn["name"], arguments=args))
    return tuple(calls)


def parse_request(data: Any) -> BotRequest:
    """Build a :class:`BotRequest` from the service input (or return a ``BotRequest`` as is)::

    {"botName": str,
     "messages": [{"role": str, "content": str, "tool_calls"?: [...], "tool_call_id"?: str}],
     "tools"?: [<chat-completions tool definition>, ...]}
    """
    if isinstance(data, BotRequest):
        return data
    if not isinstance(data, Mapping):
        raise BotError(f"bot.stream input must be an object, got {type(data).__name__}")
    name = data.get("botName", data.get("bot_name", "bot"))
    raw = data.get("messages", [])
    tools = data.get("tools") or []
    if not isinstance(name, str) or not isinstance(raw, list):
        raise BotError("bot.stream input: botName must be a string and messages a list")
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
        raise BotError("bot.stream input: tools must be a list of tool definitions")
    msgs = []
    for m in raw:
        if isinstance(m, ChatMessage):
            msgs.append(m)
            continue
        if not isinstance(m, Mapping):
            raise BotError("bot.stream input: each message must be an object")
        calls = _tool_calls(m.get("tool_calls"))
        content = m.get("content")
        if content is None and calls:  # an assistant message that only calls tools
            content = ""
        if not isinstance(content, str):
            raise BotError("bot.stream input: each message needs a string 'content'")
        call_id = m.get("tool_call_id")
        msgs.append(
            ChatMessage(
                role=str(m.get("role", "user")),
                content=content,
                tool_calls=calls,
                tool_call_id=None if call_id is None else str(call_id),
            )
        )
    return BotRequest(bot_name=name, messages=tuple(msgs), tools=tuple(tools))
