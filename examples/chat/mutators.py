"""The chat mutators. They run optimistically on every client and authoritatively on the server.

Shared with the browser (Pyodide): imports only the standard library, pydantic and synced_store.

The rules (docs/security.md, "The chat example's rules"), checked the same way on the client
(which refuses at once what its rows already show is not allowed) and on the server (which has
the last word; a refusal there is a permanent mutation error and rolls back the client's
optimistic effects):

- a user message is edited, cancelled or deleted only by its sender (``senderId``);
- a bot reply (``assistant``) is written only by the ``callBot`` action: ``updateMessage`` of a
  reply from a client is refused; the user who asked for it (``requestedBy``) may cancel it
  (``cancelMessage``) and delete it;
- ``sendMessage`` never overwrites an existing message, and refuses (as a whole: no message, no
  placeholder, no job) a reply request beyond :data:`MAX_ACTIVE_REPLIES` replies of the same user
  still streaming in the room;
- ``createTodoList`` creates a list once: called again with the same id by its creator it does
  nothing (a retried bot job), by anyone else it is refused.
"""

from __future__ import annotations

from typing import Any

from synced_store.errors import PermissionDeniedError, SyncedStoreError, ValidationError
from synced_store.protocol.codes import ErrorKind

from .lobby import add_room
from .schema import (
    CreateTodoListInput,
    MessageIdInput,
    SendMessageInput,
    UpdateMessageInput,
    parse_mention,
)

__all__ = [
    "MAX_ACTIVE_REPLIES",
    "BotReplyLimitError",
    "MessageOwnershipError",
    "cancel_message",
    "create_todo_list",
    "delete_message",
    "mutators",
    "send_message",
    "update_message",
]

#: At most this many bot replies asked for by one user may be streaming (``incomplete``) in a
#: room at once; ``sendMessage`` asking for one more is refused.
MAX_ACTIVE_REPLIES = 3

#: The private table (in the requester's private rows) listing their replies still streaming.
ACTIVE = "activeReplies"


class MessageOwnershipError(PermissionDeniedError):
    """The message is not the caller's to edit, cancel or delete (kind ``permission_denied``)."""


class BotReplyLimitError(SyncedStoreError):
    """Too many of the caller's bot replies are still streaming (kind ``quota_exceeded``)."""

    kind = ErrorKind.QUOTA_EXCEEDED


def _from_bot(ctx: Any) -> bool:
    """True when the mutation was made on the server by the ``callBot`` action
    (``ctx.mutate``); never on a client, never for a client's own mutation."""
    source = getattr(ctx, "source", None) or {}
    return bool(
        ctx.is_server and source.get("type") == "action" and source.get("action") == "callBot"
    )


def _check_owner(ctx: Any, msg: dict[str, Any], verb: str) -> None:
    """Raise unless ``ctx.user_id`` owns ``msg``: the sender of a user message, the requester
    of a bot reply."""
    mid = msg.get("id")
    if msg.get("role") == "assistant":
        requester = msg.get("requestedBy")
        if requester != ctx.user_id:
            who = f"only {requester}, who asked for it," if requester else "no user"
            raise MessageOwnershipError(f"{who} may {verb} the bot reply {mid}")
    elif msg.get("senderId") != ctx.user_id:
        raise MessageOwnershipError(
            f"only its sender ({msg.get('senderId')}) may {verb} message {mid}"
        )


async def _save(ctx: Any, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """Write message ``new`` and keep the requester's ``activeReplies`` row in step with it:
    present exactly while the reply is ``incomplete`` (written only when the status changes, so
    a streaming step costs one row)."""
    await ctx.table("messages").set(new["id"], new)
    requester = new.get("requestedBy")
    if new.get("role") != "assistant" or not requester:
        return
    was = old.get("status") if old is not None else None
    now = new.get("status")
    if was == now:
        return
    active = ctx.private_of_user(requester).table(ACTIVE)
    if now == "incomplete":
        await active.set(new["id"], {"id": new["id"]})
    else:
        await active.delete(new["id"])


async def _check_reply_limit(ctx: Any) -> None:
    """Raise if ``ctx.user_id`` already has :data:`MAX_ACTIVE_REPLIES` replies streaming."""
    active = ctx.private_of_user(ctx.user_id).table(ACTIVE)
    n = len(await active.scan(limit=MAX_ACTIVE_REPLIES).keys())
    if n >= MAX_ACTIVE_REPLIES:
        raise BotReplyLimitError(
            f"{ctx.user_id} already has {n} bot replies in progress (at most "
            f"{MAX_ACTIVE_REPLIES}); wait for one to finish or stop one"
        )


async def send_message(ctx: Any, input: SendMessageInput) -> None:
    """Save the user's message; if it starts with ``@bot `` and carries a ``botMessageId``,
    add an empty ``incomplete`` placeholder for the reply and enqueue ``callBot``.

    Refused (nothing written, no job) when ``id`` names another user's message or a reply,
    when ``botMessageId`` names an existing message, or beyond the reply cap."""
    messages = ctx.table("messages")
    current = await messages.get(input.id)
    if current is not None and (
        current.get("role") != "user" or current.get("senderId") != ctx.user_id
    ):
        raise MessageOwnershipError(f"message {input.id} already exists and is not yours")
    bot_name = parse_mention(input.text)
    reply_id = input.botMessageId if bot_name is not None else None
    if reply_id:
        if reply_id == input.id:
            raise ValidationError("botMessageId must differ from id")
        if await messages.has(reply_id):
            raise MessageOwnershipError(f"message {reply_id} already exists")
        await _check_reply_limit(ctx)
    await messages.set(
        input.id,
        {
            "id": input.id,
            "text": input.text,
            "role": "user",
            "senderId": ctx.user_id,
        },
    )
    if bot_name is not None and reply_id:
        placeholder = {
            "id": reply_id,
            "text": "",
            "role": "assistant",
            "senderId": bot_name,
            "status": "incomplete",
            "requestedBy": ctx.user_id,
        }
        await _save(ctx, None, placeholder)
        ctx.enqueue_action("callBot", {"botName": bot_name, "botMessageId": reply_id})


async def update_message(ctx: Any, input: UpdateMessageInput) -> None:
    """Set a message's text and status: a user message by its sender, a bot reply only by the
    ``callBot`` action. A deleted or cancelled message stays as it is, so a reply that is still
    streaming cannot bring it back."""
    messages = ctx.table("messages")
    current = await messages.get(input.id)
    if current is None:
        return
    if current.get("role") == "assistant":
        if not _from_bot(ctx):
            raise MessageOwnershipError(
                f"message {input.id} is a bot reply: only the bot writes it"
            )
    else:
        _check_owner(ctx, current, "edit")
    if current.get("status") == "cancelled":
        return
    await _save(ctx, current, {**current, "text": input.text, "status": input.status})


async def cancel_message(ctx: Any, input: MessageIdInput) -> None:
    """Mark a still-streaming (``incomplete``) reply ``cancelled``; its action stops. Only the
    user who asked for the reply may (on their own message it does nothing)."""
    messages = ctx.table("messages")
    current = await messages.get(input.id)
    if current is None:
        return
    _check_owner(ctx, current, "cancel")
    if current.get("status") == "incomplete":
        await _save(ctx, current, {**current, "status": "cancelled"})


async def delete_message(ctx: Any, input: MessageIdInput) -> None:
    """Delete a message: the sender's own, or a reply the caller asked for (a reply streaming
    into it stops)."""
    messages = ctx.table("messages")
    current = await messages.get(input.id)
    if current is None:
        return
    _check_owner(ctx, current, "delete")
    await messages.delete(input.id)
    requester = current.get("requestedBy")
    if current.get("role") == "assistant" and requester:
        await ctx.private_of_user(requester).table(ACTIVE).delete(input.id)


async def create_todo_list(ctx: Any, input: CreateTodoListInput) -> None:
    """Put a todo list in the room, created by ``ctx.user_id`` (a no-op if this user already
    created it; refused if the id is someone else's list)."""
    lists = ctx.table("todoLists")
    current = await lists.get(input.id)
    if current is not None:
        if current.get("createdBy") != ctx.user_id:
            raise PermissionDeniedError(f"todo list {input.id} already exists and is not yours")
        return
    items = [{"text": text, "done": False} for text in input.items]
    row = {"id": input.id, "title": input.title, "items": items, "createdBy": ctx.user_id}
    await lists.set(input.id, row)


mutators = {
    "sendMessage": send_message,
    "updateMessage": update_message,
    "cancelMessage": cancel_message,
    "deleteMessage": delete_message,
    "createTodoList": create_todo_list,
    "addRoom": add_room,
}
