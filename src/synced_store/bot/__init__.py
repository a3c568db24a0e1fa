"""Bots for the chat demo: the ``bot.stream`` platform service and its providers.

- :class:`LocalBot` — deterministic, offline (the default): a reply derived from the prompt,
  streamed word by word at a configurable pace; with tools offered, a planner decides its tool
  calls (:func:`command_planner`: ``/toolName {json}``).
- :class:`OpenAICompatibleBot` — any server speaking OpenAI's streaming chat-completions API
  (``POST {base_url}/chat/completions`` with ``stream: true``), over httpx.

:func:`make_bot_service` turns a :class:`BotConfig` into the service callable registered as
``define_backend_config(services={"bot.stream": ...})``; it takes
``{"botName": str, "messages": [{"role": ..., "content": ...}], "tools"?: [...]}`` and returns an
async iterator of text chunks, then the :class:`ToolCall` s the model asks for (when it was
offered ``tools``: chat-completions tool definitions, see :mod:`synced_store.tools`). Provider
failures raise :class:`BotError`. :class:`StreamedText` reads such a stream for an action that
commits the reply as it grows (bigger steps when commits are slow).
"""

from .base import Bot, BotError, BotRequest, ChatMessage, StreamItem, ToolCall, parse_request
from .config import BotConfig, make_bot, make_bot_service
from .local import LocalBot, ToolPlanner, command_planner, local_reply, tool_summary
from .openai_compat import OpenAICompatibleBot
from .streamed_text import StreamedText

__all__ = [
    "Bot",
    "BotConfig",
    "BotError",
    "BotRequest",
    "ChatMessage",
    "LocalBot",
    "OpenAICompatibleBot",
    "StreamItem",
    "StreamedText",
    "ToolCall",
    "ToolPlanner",
    "command_planner",
    "local_reply",
    "make_bot",
    "make_bot_service",
    "parse_request",
    "tool_summary",
]
