"""``callBot``: stream a bot's reply into its placeholder message (server only).

The reply from the ``bot.stream`` platform service is committed as it grows, one
``updateMessage`` mutation per step, so every client watches it stream; the last one sets
``complete`` (or ``error``, and the exception propagates so the job is retried and finally
recorded as failed). A step is every chunk that arrived since the previous commit
(:class:`~synced_store.bot.StreamedText`): one chunk on an idle server, several when commits are
slow, so a busy server never falls behind the provider.

The action is an idempotent gate, because a job runs at least once (a server killed mid-stream
runs it again after restart) and a client may also call it directly:

- placeholder missing (deleted) or ``cancelled``: stop, ``success: false``;
- placeholder already ``complete``: return its text;
- called by a client (not as the queued job): only the user who asked for the reply
  (``requestedBy``) may start it, and only while it is ``incomplete`` (a reply that failed is
  retried by its job, never re-run by a client: each run may be a paid model call); anyone
  else is refused with :class:`~examples.chat.mutators.MessageOwnershipError`;
- otherwise stream (again, from the start: the reply replaces whatever partial text is there).

Between steps the action re-reads the placeholder, so deleting it or marking it ``cancelled``
stops the stream at the next step. Concurrent runs for the same placeholder in one server
process are serialized, so the second one sees the first one's result.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from synced_store.bot import StreamedText

from .mutators import MessageOwnershipError
from .schema import CallBotInput, parse_mention

__all__ = ["HISTORY_MESSAGES", "actions", "call_bot"]

#: How many earlier messages are sent to the bot as context.
HISTORY_MESSAGES = 20

_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


def _lock_for(ctx: Any, message_id: str) -> asyncio.Lock:
    key = (str(getattr(ctx, "instance_id", "")), message_id)
    lock = _locks.get(key)
    if lock is None:
        lock = _locks[key] = asyncio.Lock()
    return lock


async def _history(ctx: Any, bot_message_id: str) -> list[dict[str, str]]:
    """The conversation before the reply, as chat-completion messages (mentions stripped)."""
    out: list[dict[str, str]] = []
    for _key, m in await ctx.table("messages").entries():
        if m.get("id") == bot_message_id or m.get("status") in ("incomplete", "cancelled", "error"):
            continue
        text = m.get("text", "")
        if m.get("role") == "user":
            name = parse_mention(text)
            if name is not None:
                text = text[len(name) + 2 :]
        out.append({"role": m.get("role", "user"), "content": text})
    return out[-HISTORY_MESSAGES:]


async def _stopped(ctx: Any, message_id: str) -> bool:
    """True if the placeholder was deleted or cancelled (checked between chunks)."""
    row = await ctx.table("messages").get(message_id)
    return row is None or row.get("status") == "cancelled"


async def call_bot(ctx: Any, input: CallBotInput) -> dict[str, Any]:
    """Stream ``input.botName``'s reply into message ``input.botMessageId``."""
    async with _lock_for(ctx, input.botMessageId):
        return await _call_bot(ctx, input)


async def _call_bot(ctx: Any, input: CallBotInput) -> dict[str, Any]:
    mid = input.botMessageId
    row = await ctx.table("messages").get(mid)
    if row is None or row.get("role") != "assistant":
        return {"success": False}
    if row.get("status") == "complete":
        return {"success": True, "response": row.get("text", "")}
    if row.get("status") == "cancelled":
        return {"success": False, "response": row.get("text", "")}
    if getattr(ctx, "job_id", None) is None:  # called by a client, not the queued job
        if row.get("requestedBy") != ctx.user_id:
            raise MessageOwnershipError(
                f"only the user who asked for the bot reply {mid} may run callBot for it"
            )
        if row.get("status") != "incomplete":
            return {"success": False, "response": row.get("text", "")}
    request = {"botName": input.botName, "messages": await _history(ctx, mid)}
    async with StreamedText(ctx.platform.call("bot.stream", request)) as reply:
        try:
            async for text in reply:
                if await _stopped(ctx, mid):
                    return {"success": False, "response": text}
                await ctx.mutate("updateMessage", {"id": mid, "text": text, "status": "incomplete"})
        except Exception:
            if not await _stopped(ctx, mid):
                await ctx.mutate(
                    "updateMessage", {"id": mid, "text": reply.text, "status": "error"}
                )
            raise
        text = reply.text
    if await _stopped(ctx, mid):
        return {"success": False, "response": text}
    await ctx.mutate("updateMessage", {"id": mid, "text": text, "status": "complete"})
    return {"success": True, "response": text}


actions = {"callBot": call_bot}
