"""The chat schema: a ``messages`` table, ``sendMessage`` / ``updateMessage`` mutators and the
``callBot`` action (the names of the seed page), plus ``cancelMessage`` / ``deleteMessage`` and
``activeReplies``, each user's private list of the bot replies they asked for that are still
streaming (what the per-user cap counts), and ``todoLists`` with ``createTodoList``: the tool the
bot (or any agent) uses to put a todo list in the room. ``messages`` is searchable.

Shared with the browser (Pyodide): imports only the standard library, pydantic and synced_store.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from synced_store import define_schema, table

from .lobby import AddRoomInput, Room

__all__ = [
    "MENTION_RE",
    "ActiveReply",
    "CallBotInput",
    "CallBotOutput",
    "CreateTodoListInput",
    "Message",
    "MessageIdInput",
    "SendMessageInput",
    "Status",
    "TodoItem",
    "TodoList",
    "UpdateMessageInput",
    "chat_schema",
    "parse_mention",
]

#: A bot mention at the start of a message: ``"@Claude tell me a story"`` -> ``"Claude"``.
MENTION_RE = re.compile(r"^@(\S+)\s")

Status = Literal["incomplete", "complete", "error", "cancelled"]


def parse_mention(text: str) -> str | None:
    """The bot named at the start of ``text`` (``^@(\\S+)\\s``), or None."""
    m = MENTION_RE.match(text)
    return m.group(1) if m else None


class Message(BaseModel):
    """A chat message (a row of ``messages``, keyed by ``id``).

    ``senderId`` is the user who sent a ``user`` message, or the bot's name for an
    ``assistant`` reply; ``requestedBy`` is the user who asked for a reply (replies only).
    """

    id: str
    text: str
    role: Literal["user", "assistant"]
    senderId: str
    status: Status | None = None
    requestedBy: str | None = None


class ActiveReply(BaseModel):
    """A row of ``activeReplies`` in the requester's private rows: a reply still ``incomplete``,
    keyed by the reply's message id."""

    id: str


class SendMessageInput(BaseModel):
    """``sendMessage``: a user message, and the id for the bot's reply if a bot is mentioned."""

    id: str
    text: str
    botMessageId: str | None = None


class UpdateMessageInput(BaseModel):
    """``updateMessage``: replace a message's text and status (the action streams with it)."""

    id: str
    text: str
    status: Status


class MessageIdInput(BaseModel):
    """``cancelMessage`` / ``deleteMessage``: the message's id."""

    id: str


class TodoItem(BaseModel):
    """One item of a todo list."""

    text: str
    done: bool = False


class TodoList(BaseModel):
    """A row of ``todoLists`` (keyed by ``id``): a title, its items, and who created it."""

    id: str
    title: str
    items: list[TodoItem]
    createdBy: str


ItemText = Annotated[str, Field(min_length=1, max_length=200)]


class CreateTodoListInput(BaseModel):
    """``createTodoList``: a new list in the room. When the bot calls it, the ``callBot`` action
    fills in ``id`` (derived from the reply's id, so a retried job does not create it twice)."""

    id: str = Field(min_length=1, max_length=128)
    title: str = Field(min_length=1, max_length=200, description="The list's title.")
    items: list[ItemText] = Field(
        min_length=1, max_length=50, description="The items, in order (1 to 50)."
    )


class CallBotInput(BaseModel):
    """``callBot``: which bot, and the placeholder message to stream into."""

    botName: str
    botMessageId: str


class CallBotOutput(BaseModel):
    """``callBot``'s result: ``success`` and the full reply."""

    success: bool
    response: str | None = None


class SetDisplayNameInput(BaseModel):
    """``setDisplayName``: the name the room shows for the calling user (``$user_info``)."""

    name: str = Field(min_length=1, max_length=60)


class SetDisplayNameOutput(BaseModel):
    """``setDisplayName``'s result."""

    ok: bool


chat_schema = define_schema(
    schema_version=1,
    tables={
        "messages": {"schema": table(Message), "searchable": {"text_field": "text"}},
        "activeReplies": {"schema": table(ActiveReply)},
        "todoLists": {"schema": table(TodoList)},
        "rooms": {"schema": table(Room)},  # in the lobby instance (lobby.py)
    },
    mutators={
        "sendMessage": {
            "description": "Send a message, optionally triggering a bot response",
            "input": SendMessageInput,
        },
        "updateMessage": {
            "description": "Update a message's text and status",
            "input": UpdateMessageInput,
        },
        "cancelMessage": {
            "description": "Stop a bot reply that is still streaming",
            "input": MessageIdInput,
        },
        "deleteMessage": {
            "description": "Delete a message (a streaming reply stops)",
            "input": MessageIdInput,
        },
        "createTodoList": {
            "description": "Create a todo list in the chat room: a title and its items",
            "input": CreateTodoListInput,
        },
        "addRoom": {
            "description": "List the calling room in the lobby (sent by rooms, not clients)",
            "input": AddRoomInput,
        },
    },
    actions={
        "callBot": {
            "description": "Stream an LLM response into a placeholder message",
            "input": CallBotInput,
            "output": CallBotOutput,
        },
        "setDisplayName": {
            "description": "Set the calling user's display name in this room",
            "input": SetDisplayNameInput,
            "output": SetDisplayNameOutput,
        },
    },
    # A new client receives the latest 50 messages (ids sort by time) and pages back on demand
    # ("load older", /older); docs/api.md, "Windowed sync".
    pull_windows={"messages": 50},
)
