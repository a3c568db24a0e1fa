"""Reading a chunk stream so that a slow consumer takes bigger steps instead of falling behind.

An action that streams a reply into a row commits one mutation per step. When commits are
slower than the provider's chunks (a busy server), mutating once per chunk would fall further
and further behind the provider; :class:`StreamedText` reads the stream in a background task
and hands the consumer the whole text received so far each time it asks, so every commit
carries everything that arrived meanwhile. On an idle server that is one chunk per step.

With ``min_interval`` (seconds), steps are also that far apart: from the consumer coming back
for a step (its commit done) to the next step. The server sends a streamed row to its
subscribers at most every ``ROW_INTERVAL`` (40 ms, server/fanout.py) anyway, holding and
merging what comes meanwhile, so ``min_interval=0.04`` gives a provider that sends more than
25 chunks a second one commit per frame the subscribers receive instead of one per chunk:
measured at 100 chunks/s, 45 % less server CPU per chunk and a shorter tail on a loaded
server, but about 5 ms more latency at p50 on an idle one (docs/benchmarks.md, "Fan-out").
The default is 0 (a step as soon as the text grew), and the last step, when the stream ends,
never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Any

__all__ = ["STEP_INTERVAL", "StreamedText"]

#: Default ``min_interval``: none (benchmarks/streaming.py's server sets it to compare).
STEP_INTERVAL = 0.0


class StreamedText:
    """The text of a chunk stream as it grows.

    ``async with StreamedText(stream) as reply:`` starts reading; ``async for text in reply``
    yields the text received so far, each time it grew since the previous step, and ends when
    the stream does (re-raising the stream's error after the text that came before it).
    :attr:`text` is everything received, also after an error. Leaving the block stops reading
    and closes the stream (``aclose``). Items that are not text (the tool calls a model asks
    for, :class:`~synced_store.bot.ToolCall`) are collected in :attr:`tool_calls`.
    ``min_interval``: the least time from the consumer coming back for a step to the next
    step (module doc; None: :data:`STEP_INTERVAL`).
    """

    def __init__(self, stream: AsyncIterable[Any], *, min_interval: float | None = None) -> None:
        self._stream = stream
        self._min_interval = STEP_INTERVAL if min_interval is None else min_interval
        self.text = ""
        self.tool_calls: list[Any] = []
        self._changed = asyncio.Event()
        self._ended = asyncio.Event()  # set once the stream ended (or failed)
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
            self._changed.set()
            self._ended.set()

    async def _steps(self) -> AsyncIterator[str]:
        seen = 0
        loop = asyncio.get_running_loop()
        back = -math.inf  # when the consumer last came back for a step
        while True:
            await self._changed.wait()
            wait = back + self._min_interval - loop.time()
            if wait > 0 and not self._ended.is_set():  # what arrives meanwhile joins this step
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), wait)
            self._changed.clear()
            done = self._ended.is_set()  # read before the text: a chunk can't slip in after "done"
            if len(self.text) > seen:
                seen = len(self.text)
                yield self.text
                back = loop.time()
            if done:
                if self._error is not None:
                    raise self._error
                return

    def __aiter__(self) -> AsyncIterator[str]:
        return self._steps()
