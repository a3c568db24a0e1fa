"""``callBot``: stream a bot's reply into its placeholder message (server only).

The reply from the ``bot.stream`` platform service is committed as it grows, one
``updateMessage`` mutation per step, so every client watches it stream; the last one sets
``complete`` (or ``error``, and the exception propagates so the job is retried and finally
recorded as failed). A step is every chunk that arrived since the previous commit
(:class:`~synced_store.bot.StreamedText`): one chunk on an idle server, several when commits are
slow, so a busy server never falls behind the provider.

The bot is offered one tool, ``createTodoList`` (``tools.BOT_TOOLS``). When it asks for tool
calls, each runs as a mutation through ``ctx.mutate`` (as the user who asked for the reply, so it
syncs to every client like theirs would), its result goes back to the bot as a ``tool`` message,
and the bot is asked again; the text of every round is shown, one after the other, in the same
reply. The list's id is derived from the reply's id, so a job run twice creates it once.

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
import time
import weakref
from typing import Any

from synced_store.bot import StreamedText
from synced_store.tools import ActionTarget

from .mutators import MessageOwnershipError
from .schema import CallBotInput, SetDisplayNameInput, parse_mention
from .tools import BOT_TOOLS

__all__ = ["HISTORY_MESSAGES", "MAX_TOOL_ROUNDS", "actions", "call_bot"]

#: How many earlier messages are sent to the bot as context.
HISTORY_MESSAGES = 20
#: How many times one reply may go back to the bot with tool results.
MAX_TOOL_ROUNDS = 3

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
    """True if the placeholder was deleted or cancelled."""
    row = await ctx.table("messages").get(message_id)
    return row is None or row.get("status") == "cancelled"


#: Seconds between two cancellation checks while a reply streams. ``updateMessage`` never
#: writes a cancelled or deleted reply anyway; the check only stops asking the model early.
STOP_CHECK_INTERVAL = 0.1


class _StopCheck:
    """``_stopped`` at most every ``STOP_CHECK_INTERVAL`` seconds (a read of the whole reply
    per chunk costs more than the chunk's commit)."""

    def __init__(self, ctx: Any, message_id: str) -> None:
        self._ctx = ctx
        self._id = message_id
        self._next = 0.0

    async def __call__(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + STOP_CHECK_INTERVAL
        return await _stopped(self._ctx, self._id)


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
    messages: list[dict[str, Any]] = list(await _history(ctx, mid))
    shown = ""  # the text of the rounds before this one
    calls = 0
    for round_ in range(MAX_TOOL_ROUNDS + 1):
        request = {"botName": input.botName, "messages": messages, "tools": BOT_TOOLS.openai()}
        stopped = _StopCheck(ctx, mid)
        async with StreamedText(ctx.platform.call("bot.stream", request)) as reply:
            try:
                async for text in reply:
                    if await stopped():
                        return {"success": False, "response": _join(shown, text)}
                    await ctx.mutate(
                        "updateMessage",
                        {"id": mid, "text": _join(shown, text), "status": "incomplete"},
                    )
            except Exception:
                if not await _stopped(ctx, mid):
                    await ctx.mutate(
                        "updateMessage",
                        {"id": mid, "text": _join(shown, reply.text), "status": "error"},
                    )
                raise
        shown = _join(shown, reply.text)
        if not reply.tool_calls or round_ == MAX_TOOL_ROUNDS or await _stopped(ctx, mid):
            break
        messages.append(
            {
                "role": "assistant",
                "content": reply.text,
                "tool_calls": [c.to_openai() for c in reply.tool_calls],
            }
        )
        for call in reply.tool_calls:
            calls += 1
            result = await BOT_TOOLS.call(
                ActionTarget(ctx), call.name, call.arguments, hidden_values={"id": f"{mid}-{calls}"}
            )
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result.text()})
    if await _stopped(ctx, mid):
        return {"success": False, "response": shown}
    await ctx.mutate("updateMessage", {"id": mid, "text": shown, "status": "complete"})
    return {"success": True, "response": shown}


def _join(before: str, text: str) -> str:
    """The reply's text: earlier rounds' text, then this round's (a blank line between)."""
    return f"{before}\n\n{text}" if before and text else before or text


async def set_display_name(ctx: Any, input: SetDisplayNameInput) -> dict[str, bool]:
    """Set the caller's name in ``$user_info`` (a system table clients read, never write)."""
    from synced_store.server.members import InstanceMembers

    await InstanceMembers(ctx.instance).set_user_info(ctx.user_id, display_name=input.name)
    return {"ok": True}


actions = {"callBot": call_bot, "setDisplayName": set_display_name}
