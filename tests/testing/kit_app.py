"""A small ask-a-bot app for the testing kit's tests: ``ask`` stores a question and a
placeholder and enqueues ``answer``, which streams ``bot.stream`` into the placeholder."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from synced_store import ValidationError, define_backend_config, define_schema, table
from synced_store.bot import StreamedText


class Entry(BaseModel):
    text: str
    status: str = "done"
    by: str = ""


class Ask(BaseModel):
    id: str
    text: str


class Write(BaseModel):
    id: str
    text: str
    status: str


class Answer(BaseModel):
    id: str


class AnswerOut(BaseModel):
    text: str
    tools: list[str] = []


async def ask(ctx: Any, input: Ask) -> None:
    entries = ctx.table("entries")
    await entries.set(f"{input.id}-q", {"text": input.text, "by": ctx.user_id})
    await entries.set(f"{input.id}-a", {"text": "", "status": "streaming"})
    if input.text == "boom":  # fails after writing: everything above rolls back
        raise ValidationError("no booms")
    ctx.enqueue_action("answer", {"id": input.id})


async def write(ctx: Any, input: Write) -> None:
    await ctx.table("entries").set(input.id, {"text": input.text, "status": input.status})


async def answer(ctx: Any, input: Answer) -> dict[str, Any]:
    question = await ctx.table("entries").get(f"{input.id}-q")
    request = {"botName": "bot", "messages": [{"role": "user", "content": question["text"]}]}
    async with StreamedText(ctx.platform.call("bot.stream", request)) as reply:
        async for text in reply:
            await ctx.mutate("write", {"id": f"{input.id}-a", "text": text, "status": "streaming"})
    await ctx.mutate("write", {"id": f"{input.id}-a", "text": reply.text, "status": "done"})
    return {"text": reply.text, "tools": [c.name for c in reply.tool_calls]}


backend = define_backend_config(
    define_schema(
        1,
        {"entries": table(Entry)},
        mutators={"ask": {"input": Ask}, "write": {"input": Write}},
        actions={"answer": {"input": Answer, "output": AnswerOut}},
    ),
    {"ask": ask, "write": write},
    {"answer": answer},
)
