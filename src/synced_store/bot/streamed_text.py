"""Reading a chunk stream so that a slow consumer takes bigger steps instead of falling behind.

An action that streams a reply into a row commits one mutation per step. When commits are
slower than the provider's chunks (a busy server), mutating once per chunk would fall further
and further behind the provider; :class:`StreamedText` reads the stream in a background task
and hands the consumer the whole text received so far each time it asks, so every commit
carries everything that arrived meanwhile. On an idle server that is one chunk per step.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Any

__all__ = ["StreamedText"]


class StreamedText:
    """The text of a chunk stream as it grows.

    ``async with StreamedText(stream) as reply:`` starts reading; ``async for text in reply``
    yields the text received so far, each time it grew since the previous step, and ends when
    the stream does (re-raising the stream's error after the text that came before it).
    :attr:`text` is everything received, also after an error. Leaving the block stops reading
    and closes the stream (``aclose``). Items that are not text (the tool calls a model asks
    for, :class:`~synced_store.bot.ToolCall`) are collected in :attr:`tool_calls`.
    """

    def __init__(self, stream: AsyncIterable[Any]) -> None:
        self._stream = stream
        self.text = ""
        self.tool_calls: list[Any] = []
        self._changed = asyncio.Event()
        self._done = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamedText:
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _read(self) -> None:
        try:
            async for chunk in self._stream:
                if isinstance(chunk, str):
                    self.text += chunk
                    self._changed.set()
                else:
                    self.tool_calls.append(chunk)
        except Exception as exc:  # handed to the consumer, after the text before it
            self._error = exc
        finally:
            self._done = True
            self._changed.set()

    async def _steps(self) -> AsyncIterator[str]:
        seen = 0
        while True:
            await self._changed.wait()
            self._changed.clear()
            done = self._done  # read before the text: a chunk can't slip in after "done"
            if len(self.text) > seen:
                seen = len(self.text)
                yield self.text
            if done:
                if self._error is not None:
                    raise self._error
                return

    def __aiter__(self) -> AsyncIterator[str]:
        return self._steps()
