"""Scripted bots for tests: ``bot.stream`` services that answer from a script.

    harness = await create_test_harness(backend, bot=text_response("Hello there"))
    bot = sequential_responses(
        text_response("", tool_calls=[tool_call("createTodoList", {"title": "Trip"})]),
        text_response("I made the list."),
    )
    runner = create_local_runner(backend, platform=create_mock_platform_caller(
        {"bot.stream": bot}))

Each helper returns a :class:`ScriptedBot`, callable as the service (``input -> async iterator
of text chunks and tool calls``), which records every request it got (:attr:`ScriptedBot.requests`,
parsed :class:`~synced_store.bot.BotRequest` s).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..bot.base import BotError, BotRequest, StreamItem, ToolCall, parse_request

__all__ = [
    "BotResponse",
    "ScriptedBot",
    "error_response",
    "sequential_responses",
    "text_response",
    "text_responses",
    "tool_call",
]


@dataclass(frozen=True)
class BotResponse:
    """One scripted reply: ``items`` (text chunks, then tool calls) and, optionally, the
    ``error`` raised (as :class:`~synced_store.bot.BotError`) after them."""

    items: tuple[StreamItem, ...] = ()
    error: str | None = None


class ScriptedBot:
    """A ``bot.stream`` service answering call *n* with ``responses[n]``.

    With ``repeat`` the last response answers every later call; without it, a call past the
    script raises :class:`~synced_store.bot.BotError`. ``pace`` seconds pass before each chunk
    (0: one event-loop turn, so other tasks see the reply grow).
    """

    def __init__(
        self, responses: Sequence[BotResponse], *, repeat: bool = False, pace: float = 0.0
    ) -> None:
        if not responses:
            raise ValueError("a scripted bot needs at least one response")
        self.responses = list(responses)
        self.repeat = repeat
        self.pace = pace
        #: The requests received, in order.
        self.requests: list[BotRequest] = []

    def __call__(self, input: Any) -> AsyncIterator[StreamItem]:
        request = parse_request(input)
        n = len(self.requests)
        self.requests.append(request)
        if n < len(self.responses):
            response = self.responses[n]
        elif self.repeat:
            response = self.responses[-1]
        else:
            response = BotResponse(
                error=f"scripted bot: no response for call {n + 1} "
                f"(the script has {len(self.responses)})"
            )
        return self._stream(response)

    async def _stream(self, response: BotResponse) -> AsyncIterator[StreamItem]:
        for item in response.items:
            await asyncio.sleep(self.pace)
            yield item
        if response.error is not None:
            raise BotError(response.error)

    @property
    def calls(self) -> int:
        """How many times the bot was called."""
        return len(self.requests)


def _chunks(text: str | Sequence[str]) -> tuple[str, ...]:
    if not isinstance(text, str):
        return tuple(text)
    if not text:
        return ()
    words = text.split(" ")
    return (words[0], *(" " + w for w in words[1:]))


def tool_call(
    name: str, arguments: Mapping[str, Any] | str | None = None, *, id: str | None = None
) -> ToolCall:
    """A :class:`~synced_store.bot.ToolCall` of tool ``name`` (arguments as a dict or JSON
    text); the id defaults to one derived from the name and arguments."""
    args = arguments if isinstance(arguments, str) else json.dumps(dict(arguments or {}))
    if id is None:
        id = "call_" + hashlib.sha256(f"{name}:{args}".encode()).hexdigest()[:12]
    return ToolCall(id=id, name=name, arguments=args)


def _response(text: str | Sequence[str], tool_calls: Sequence[ToolCall]) -> BotResponse:
    return BotResponse(items=(*_chunks(text), *tool_calls))


def text_response(
    text: str | Sequence[str] = "",
    *,
    tool_calls: Sequence[ToolCall] = (),
    pace: float = 0.0,
) -> ScriptedBot:
    """A bot that answers every call with ``text`` (a string streamed word by word, or a list
    of chunks), then ``tool_calls``."""
    return ScriptedBot([_response(text, tool_calls)], repeat=True, pace=pace)


def text_responses(texts: Sequence[str | Sequence[str]], *, pace: float = 0.0) -> ScriptedBot:
    """A bot that answers call *n* with ``texts[n]``; a call past the list is a
    :class:`~synced_store.bot.BotError`."""
    return ScriptedBot([_response(t, ()) for t in texts], pace=pace)


def error_response(
    message: str, *, after: str | Sequence[str] = "", pace: float = 0.0
) -> ScriptedBot:
    """A bot that streams ``after`` (possibly nothing), then fails with ``message`` (a
    :class:`~synced_store.bot.BotError`, as a provider's failure is), on every call."""
    return ScriptedBot([BotResponse(items=_chunks(after), error=message)], repeat=True, pace=pace)


def sequential_responses(
    *responses: ScriptedBot | BotResponse | str, pace: float = 0.0
) -> ScriptedBot:
    """A bot whose call *n* gets the *n*-th response: a helper's bot (its first response), a
    :class:`BotResponse`, or a text. A call past the end is a
    :class:`~synced_store.bot.BotError`."""
    script: list[BotResponse] = []
    for r in responses:
        if isinstance(r, ScriptedBot):
            script.append(r.responses[0])
        elif isinstance(r, BotResponse):
            script.append(r)
        else:
            script.append(_response(r, ()))
    return ScriptedBot(script, pace=pace)
