"""A real HTTP server speaking OpenAI's streaming chat-completions format, for tests.

Served by uvicorn on a free 127.0.0.1 port (not a mock object, not ASGITransport, which
buffers): ``async with fake_openai_server(...) as server: server.base_url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Turn:
    """One reply: text ``chunks``, then ``tool_calls`` (``{"id", "name", "arguments"}``, the
    arguments streamed in three pieces, as real servers split them)."""

    chunks: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, str]] = field(default_factory=list)


@dataclass
class FakeOpenAI:
    """What the server replies, and what it received."""

    chunks: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    #: Replies to successive requests (the last one repeats); when empty, ``chunks``.
    turns: list[Turn] = field(default_factory=list)
    status: int = 200
    #: Stop the stream after this many chunks without ``[DONE]`` (a dropped connection).
    cut_after: int | None = None
    #: Send an ``{"error": ...}`` event after this many chunks.
    error_after: int | None = None
    #: Delay between chunks, seconds.
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"


def _app(state: FakeOpenAI) -> Starlette:
    async def completions(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        if state.status != 200:
            return JSONResponse(
                {"error": {"message": "the model is overloaded", "type": "server_error"}},
                status_code=state.status,
            )

        turn = (
            state.turns[min(len(state.requests) - 1, len(state.turns) - 1)]
            if state.turns
            else Turn(chunks=state.chunks)
        )

        async def events() -> AsyncIterator[str]:
            base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"]}
            yield (
                "data: "
                + json.dumps({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                + "\n\n"
            )
            for i, text in enumerate(turn.chunks):
                if state.cut_after is not None and i >= state.cut_after:
                    return
                if state.error_after is not None and i >= state.error_after:
                    yield "data: " + json.dumps({"error": {"message": "boom mid-stream"}}) + "\n\n"
                    return
                if state.delay:
                    await asyncio.sleep(state.delay)
                yield ": keep-alive comment\n\n" if i == 1 else ""
                yield (
                    "data: "
                    + json.dumps(
                        {
                            **base,
                            "choices": [
                                {"index": 0, "delta": {"content": text}, "finish_reason": None}
                            ],
                        }
                    )
                    + "\n\n"
                )
            for n, call in enumerate(turn.tool_calls):
                args = call["arguments"]
                third = max(1, len(args) // 3)
                pieces = [args[:third], args[third : 2 * third], args[2 * third :]]
                for k, piece in enumerate(pieces):
                    delta: dict[str, Any] = {"index": n, "function": {"arguments": piece}}
                    if k == 0:
                        delta.update(id=call["id"], type="function")
                        delta["function"]["name"] = call["name"]
                    yield (
                        "data: "
                        + json.dumps(
                            {**base, "choices": [{"index": 0, "delta": {"tool_calls": [delta]}}]}
                        )
                        + "\n\n"
                    )
            finish = "tool_calls" if turn.tool_calls else "stop"
            yield (
                "data: "
                + json.dumps(
                    {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
                )
                + "\n\n"
            )
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@contextlib.asynccontextmanager
async def fake_openai_server(state: FakeOpenAI | None = None) -> AsyncIterator[FakeOpenAI]:
    """Run the fake server for the duration of the block."""
    state = state or FakeOpenAI()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(state), log_level="warning", lifespan="off"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # uvicorn has no readiness callback; bounded by the test
            if task.done():
                await task
            await asyncio.sleep(0.005)
        yield state
    finally:
        server.should_exit = True
        await task
        sock.close()
