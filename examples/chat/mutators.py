"""The chat mutators. They run optimistically on every client and authoritatively on the server.

Shared with the browser (Pyodide): imports only the standard library, pydantic and synced_store.
"""

from __future__ import annotations

from typing import Any

from .schema import MessageIdInput, SendMessageInput, UpdateMessageInput, parse_mention

__all__ = ["cancel_message", "delete_message", "mutators", "send_message", "update_message"]


async def send_message(ctx: Any, input: SendMessageInput) -> None:
    """Save the user's message; if it starts with ``@bot `` and carries a ``botMessageId``,
    add an empty ``incomplete`` placeholder for the reply and enqueue ``callBot``."""
    messages = ctx.table("messages")
    await messages.set(
        input.id,
        {
            "id": input.id,
            "text": input.text,
            "role": "user",
            "senderId": ctx.user_id,
        },
    )
    bot_name = parse_mention(input.text)
    if bot_name is not None and input.botMessageId:
        await messages.set(
            input.botMessageId,
            {
                "id": input.botMessageId,
                "text": "",
                "role": "assistant",
                "senderId": bot_name,
                "status": "incomplete",
            },
        )
        ctx.enqueue_action("callBot", {"botName": bot_name, "botMessageId": input.botMessageId})


async def update_message(ctx: Any, input: UpdateMessageInput) -> None:
    """Set a message's text and status. A deleted or cancelled message stays as it is, so a
    reply that is still streaming cannot bring it back."""
    messages = ctx.table("messages")
    current = await messages.get(input.id)
    if current is None or current.get("status") == "cancelled":
        return
    await messages.set(input.id, {**current, "text": input.text, "status": input.status})


async def cancel_message(ctx: Any, input: MessageIdInput) -> None:
    """Mark a still-streaming (``incomplete``) reply ``cancelled``; its action stops."""
    messages = ctx.table("messages")
    current = await messages.get(input.id)
    if current is not None and current.get("status") == "incomplete":
        await messages.set(input.id, {**current, "status": "cancelled"})


async def delete_message(ctx: Any, input: MessageIdInput) -> None:
    """Delete a message (a reply streaming into it stops)."""
    await ctx.table("messages").delete(input.id)


mutators = {
    "sendMessage": send_message,
    "updateMessage": update_message,
    "cancelMessage": cancel_message,
    "deleteMessage": delete_message,
}
