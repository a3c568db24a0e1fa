"""A client for OpenAI-compatible streaming chat completions (Server-Sent Events over httpx).

Works with api.openai.com and any compatible server (llama.cpp's server, vLLM, Ollama, ...):
``POST {base_url}/chat/completions`` with ``"stream": true``; the response is ``data: {json}``
lines ending with ``data: [DONE]``; each chunk's text is ``choices[0].delta.content``.

With tools in the request (``"tools": [...]``), the model may answer with tool calls instead:
``choices[0].delta.tool_calls`` deltas, each ``{"index", "id"?, "function": {"name"?,
"arguments"?}}``, whose pieces (the arguments arrive a few characters at a time) are joined per
``index``; the calls are yielded as :class:`ToolCall` once the choice finishes
(``finish_reason``, normally ``"tool_calls"``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .base import BotError, BotRequest, StreamItem, ToolCall

__all__ = ["OpenAICompatibleBot"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"


class OpenAICompatibleBot:
    """Streams a chat completion from an OpenAI-compatible server.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8080/v1``.
        model: the model name sent in the request.
        api_key: sent as ``Authorization: Bearer ...`` when given.
        system_prompt: prepended as a ``system`` message when given.
        timeout: seconds for connecting and between received bytes.
        extra: more request fields (``temperature``, ``max_tokens``, ...).
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        system_prompt: str | None = None,
        timeout: float = 60.0,
        extra: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.system_prompt = system_prompt
        self.timeout = timeout
        self.extra = dict(extra or {})
        self._transport = transport

    @property
    def url(self) -> str:
        """The chat-completions endpoint."""
        return f"{self.base_url}/chat/completions"

    def _body(self, request: BotRequest) -> dict[str, Any]:
        messages = [m.to_openai() for m in request.messages]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        body = {**self.extra, "model": self.model, "messages": messages, "stream": True}
        if request.tools:
            body["tools"] = [dict(t) for t in request.tools]
        return body

    async def stream(self, request: BotRequest) -> AsyncIterator[StreamItem]:
        """Yield the completion's text deltas, then its tool calls; raise :class:`BotError` on
        any failure."""
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, transport=self._transport) as client,
                client.stream(
                    "POST", self.url, json=self._body(request), headers=headers
                ) as response,
            ):
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    raise BotError(f"{self.url}: HTTP {response.status_code}: {_error_text(body)}")
                async for chunk in _parse_sse(response.aiter_lines(), self.url):
                    yield chunk
        except httpx.HTTPError as exc:
            raise BotError(f"{self.url}: {type(exc).__name__}: {exc}") from exc


class _ToolCallParts:
    """Tool-call deltas joined per ``index`` (an id and name once, arguments in pieces)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.parts: dict[int, dict[str, str]] = {}

    def add(self, deltas: Any) -> None:
        if not isinstance(deltas, list):
            raise BotError(f"{self.url}: malformed tool_calls delta: {deltas!r:.200}")
        for d in deltas:
            if not isinstance(d, dict) or not isinstance(d.get("index", 0), int):
                raise BotError(f"{self.url}: malformed tool_calls delta: {d!r:.200}")
            part = self.parts.setdefault(d.get("index", 0), {"id": "", "name": "", "args": ""})
            if isinstance(d.get("id"), str) and d["id"]:
                part["id"] = d["id"]
            fn = d.get("function") or {}
            if isinstance(fn.get("name"), str):
                part["name"] += fn["name"]
            if isinstance(fn.get("arguments"), str):
                part["args"] += fn["arguments"]

    def take(self) -> list[ToolCall]:
        calls = []
        for index in sorted(self.parts):
            p = self.parts[index]
            if not p["name"]:
                raise BotError(f"{self.url}: a tool call without a function name")
            calls.append(
                ToolCall(id=p["id"] or f"call_{index}", name=p["name"], arguments=p["args"] or "{}")
            )
        self.parts.clear()
        return calls


async def _parse_sse(lines: AsyncIterator[str], url: str) -> AsyncIterator[StreamItem]:
    """Text deltas, then tool calls, from an SSE stream of chat-completion chunks, up to
    ``[DONE]``."""
    finished = False
    calls = _ToolCallParts(url)
    async for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, comments (":"), "event:" / "id:" fields
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError:
            raise BotError(f"{url}: malformed stream event: {payload[:200]!r}") from None
        if not isinstance(event, dict):
            raise BotError(f"{url}: malformed stream event: {payload[:200]!r}")
        if event.get("error"):
            raise BotError(f"{url}: error event: {_error_text(json.dumps(event))}")
        choices = event.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            continue  # e.g. a usage-only chunk
        choice = choices[0]
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            yield content
        if delta.get("tool_calls") is not None:
            calls.add(delta["tool_calls"])
        if choice.get("finish_reason"):
            finished = True
            for call in calls.take():
                yield call
    if not finished:
        raise BotError(f"{url}: the stream ended before [DONE]")


def _error_text(body: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body (shortened)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300]
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    return body[:300]
