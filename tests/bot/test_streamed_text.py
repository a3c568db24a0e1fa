"""StreamedText: the consumer gets the text so far, in bigger steps when it is slow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from synced_store.bot import StreamedText, ToolCall

END = object()


class Provider:
    """A chunk stream the test feeds by hand (``put``), recording whether it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.closed = False

    def put(self, *items: object) -> None:
        for item in items:
            self.queue.put_nowait(item)

    async def stream(self) -> AsyncIterator[str]:
        """Yields what was put; ``queue.join()`` returns once the reader took everything."""
        try:
            while True:
                item = await self.queue.get()
                self.queue.task_done()
                if item is END:
                    return
                if isinstance(item, Exception):
                    raise item
                assert isinstance(item, str)
                yield item
        finally:
            self.closed = True


async def test_a_prompt_consumer_sees_every_chunk() -> None:
    p = Provider()
    steps = []
    async with StreamedText(p.stream()) as reply:
        it = aiter(reply)
        for chunk in ("Once", " upon", " a time"):
            p.put(chunk)
            steps.append(await anext(it))
        p.put(END)
        with pytest.raises(StopAsyncIteration):
            await anext(it)
    assert steps == ["Once", "Once upon", "Once upon a time"]
    assert p.closed


async def test_a_busy_consumer_takes_bigger_steps() -> None:
    p = Provider()
    async with StreamedText(p.stream()) as reply:
        it = aiter(reply)
        p.put("a")
        assert await anext(it) == "a"
        # While the consumer is busy (committing), three chunks arrive: one step covers them.
        p.put("b", "c", "d")
        await p.queue.join()  # the reader has taken all three
        assert await anext(it) == "abcd"
        p.put(END)
        assert [t async for t in it] == []


async def test_the_stream_error_comes_after_the_text_before_it() -> None:
    p = Provider()
    p.put("partial", " reply", RuntimeError("provider failed"))
    seen: list[str] = []

    async def consume(reply: StreamedText) -> None:
        async for text in reply:
            seen.append(text)

    async with StreamedText(p.stream()) as reply:
        with pytest.raises(RuntimeError, match="provider failed"):
            await consume(reply)
        assert reply.text == "partial reply"
    assert seen[-1] == "partial reply"


async def test_leaving_early_stops_reading_and_closes_the_stream() -> None:
    p = Provider()
    async with StreamedText(p.stream()) as reply:
        p.put("first")
        async for text in reply:
            assert text == "first"
            break
    assert p.closed
    assert reply.text == "first"


async def test_tool_calls_are_collected_apart_from_the_text() -> None:
    call = ToolCall("c1", "addTodo", "{}")

    async def stream() -> AsyncIterator[object]:
        yield "Let me "
        yield "do that."
        yield call

    async with StreamedText(stream()) as reply:
        steps = [text async for text in reply]
    assert steps[-1] == "Let me do that."
    assert reply.text == "Let me do that."
    assert reply.tool_calls == [call]


async def test_steps_are_at_least_min_interval_apart_and_the_last_never_waits() -> None:
    """Chunks that arrive within ``min_interval`` of the consumer's last step join the next
    step (one commit per frame the fan-out would send anyway); the end of the stream does not
    wait for the interval."""
    p = Provider()
    async with StreamedText(p.stream(), min_interval=30.0) as reply:
        it = aiter(reply)
        p.put("a")
        assert await anext(it) == "a"
        step = asyncio.ensure_future(anext(it))
        p.put("b")
        await p.queue.join()
        done, _ = await asyncio.wait([step], timeout=0.2)
        assert not done  # within the interval: the step waits for more
        p.put("c", END)
        assert await asyncio.wait_for(step, 10) == "abc"  # the stream ended: no more waiting
        assert [t async for t in it] == []
