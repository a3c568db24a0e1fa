"""What the chat's bot and AI agents may use as tools.

``EXPOSE`` (the backend's ``expose``) is what agents get over MCP: sending, cancelling and
deleting messages, creating todo lists, the ``callBot`` action, and reading (and searching) the
messages and todo lists. ``BOT_TOOLS`` is the one tool the ``callBot`` action offers the bot,
``createTodoList``, with its ``id`` hidden: the action derives it from the reply's id, so a job
that runs twice creates the list once. :func:`todo_planner` lets the offline local bot use it.
"""

from __future__ import annotations

import hashlib
import json
import re

from synced_store.bot import BotRequest, ToolCall, command_planner
from synced_store.tools import define_tools

from .schema import chat_schema

__all__ = ["BOT_TOOLS", "EXPOSE", "todo_planner"]

EXPOSE = {
    "mutators": ["sendMessage", "cancelMessage", "deleteMessage", "createTodoList"],
    "actions": ["callBot"],
    "tables": ["messages", "todoLists"],
}

BOT_TOOLS = define_tools(
    chat_schema, {"mutators": ["createTodoList"]}, hidden={"createTodoList": ["id"]}
)

#: ``todo Camping: tent, stove, map`` (also ``todo list ...``, ``make a todo list ...``).
_TODO = re.compile(
    r"^\s*(?:(?:make|create)\s+(?:a\s+)?)?todo(?:\s+list)?\s*(?P<title>[^:]*):(?P<items>.+)$",
    re.IGNORECASE | re.DOTALL,
)


def todo_planner(request: BotRequest) -> list[ToolCall]:
    """The local bot's tool calls: ``createTodoList`` for a prompt like ``todo Camping: tent,
    stove, map`` (items split on commas), else :func:`~synced_store.bot.command_planner`."""
    m = _TODO.match(request.prompt)
    if m is None or "createTodoList" not in request.tool_names():
        return command_planner(request)
    items = [i.strip() for i in m.group("items").split(",") if i.strip()]
    title = m.group("title").strip() or "Todo"
    args = json.dumps({"title": title, "items": items})
    digest = hashlib.sha256(request.prompt.encode()).hexdigest()[:12]
    return [ToolCall(id=f"call_{digest}", name="createTodoList", arguments=args)]
