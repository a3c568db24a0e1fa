"""A deterministic, offline bot: the reply depends only on the prompt; words at a fixed pace.

With tools in the request it can call them too, so tool-using apps work offline: a *planner*
maps the request to tool calls (the default, :func:`command_planner`, answers a prompt written
``/toolName {"json": "arguments"}``). Once the results come back (``tool`` messages), it
replies with a short sentence saying what it did.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Callable, Sequence

from .base import BotError, BotRequest, StreamItem, ToolCall

__all__ = ["LocalBot", "ToolPlanner", "command_planner", "local_reply", "tool_summary"]

#: ``planner(request) -> tool calls`` (empty: answer with text).
ToolPlanner = Callable[[BotRequest], Sequence[ToolCall]]

_OPENINGS = (
    "Once upon a time, in a village at the edge of a quiet forest,",
    "Long ago, on an island where the tides kept perfect time,",
    "In a city built of old libraries and new bridges,",
)
_STORY = (
    "a curious engineer kept a notebook of every change and every reason for it. "
    "Each morning she synced her notes with friends across the valley, and each evening "
    "the notes agreed, no matter who had written first or whose lantern had gone dark. "
    "When storms cut the roads, she kept writing offline, trusting that her words would "
    "travel later and land in the right order. The elders called it magic; she called it "
    "a log, a cookie and a little patience. One day a stranger asked how the village never "
    "lost a single line, and she smiled, opened the notebook, and began to explain"
)
_WORDS = _STORY.split(" ")


def local_reply(prompt: str, *, words: int = 60) -> str:
    """The full reply :class:`LocalBot` streams for ``prompt`` (deterministic)."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    out = rng.choice(_OPENINGS).split()
    start = rng.randrange(len(_WORDS))
    i = start
    while len(out) < words:
        out.append(_WORDS[i % len(_WORDS)])
        i += 1
    text = " ".join(out[:words])
    return text.rstrip(",.") + "."


def command_planner(request: BotRequest) -> list[ToolCall]:
    """One call when the prompt is ``/name {json arguments}`` (or ``/name`` alone: ``{}``)
    and ``name`` is an offered tool; otherwise none."""
    prompt = request.prompt.strip()
    if not prompt.startswith("/"):
        return []
    name, _, args = prompt[1:].partition(" ")
    if name not in request.tool_names():
        return []
    args = args.strip() or "{}"
    return [ToolCall(id=_call_id(request, 0), name=name, arguments=args)]


def _call_id(request: BotRequest, n: int) -> str:
    """A call id that depends only on the conversation (a rerun asks the same calls)."""
    digest = hashlib.sha256(request.prompt.encode()).hexdigest()[:12]
    return f"call_{digest}_{n}"


def tool_summary(request: BotRequest) -> str:
    """What the results of the latest tool calls say, as one sentence per call: ``Done:
    name.`` or ``name failed: <error>.``"""
    names: dict[str, str] = {}
    results: list[tuple[str, str]] = []
    for m in request.messages:
        if m.role == "assistant" and m.tool_calls:
            names = {c.id: c.name for c in m.tool_calls}
            results = []
        elif m.role == "tool" and m.tool_call_id is not None:
            results.append((names.get(m.tool_call_id, "a tool"), m.content))
    parts = []
    for name, content in results:
        if content.startswith("Error"):
            parts.append(f"{name} failed: {content}.")
        else:
            parts.append(f"Done: {name}.")
    return " ".join(parts) or "Done."


class LocalBot:
    """Streams :func:`local_reply` word by word, sleeping ``pace`` seconds before each chunk.

    ``planner`` decides tool calls when the request offers tools (default:
    :func:`command_planner`); after tool results it streams :func:`tool_summary`.
    ``fail_after`` (for demos and tests) raises :class:`BotError` after that many chunks.
    """

    def __init__(
        self,
        *,
        pace: float = 0.05,
        words: int = 60,
        fail_after: int | None = None,
        planner: ToolPlanner = command_planner,
    ) -> None:
        if pace < 0 or words < 1:
            raise ValueError("pace must be >= 0 and words >= 1")
        self.pace = pace
        self.words = words
        self.fail_after = fail_after
        self.planner = planner

    async def stream(self, request: BotRequest) -> AsyncIterator[StreamItem]:
        """Yield the tool calls the planner asks for, or the reply one word (with its
        leading space) at a time."""
        last = request.messages[-1] if request.messages else None
        if last is not None and last.role == "tool":
            text = tool_summary(request)
        else:
            calls = list(self.planner(request)) if request.tools else []
            if calls:
                for call in calls:
                    try:
                        json.loads(call.arguments)
                    except ValueError:
                        raise BotError(
                            f"local bot: the planner wrote invalid JSON arguments for {call.name}"
                        ) from None
                    yield call
                return
            text = local_reply(request.prompt, words=self.words)
        for n, word in enumerate(text.split(" ")):
            if self.fail_after is not None and n >= self.fail_after:
                raise BotError(f"local bot: simulated failure after {n} chunks")
            if self.pace:
                await asyncio.sleep(self.pace)
            else:
                await asyncio.sleep(0)
            yield word if n == 0 else " " + word
