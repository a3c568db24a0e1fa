"""Streaming costs O(final size): an action that calls ``ctx.mutate`` 1,000 times on one row
sends each subscriber about the row's final size (append deltas), while the naive full-row
rewrite (``append_deltas=False``) sends the sum of every intermediate size: O(n^2).

With 320-byte appends the bound holds even if every update were its own poke (each poke adds a
~110-byte envelope); with small appends it holds because the server merges a row's updates
into at most one poke per ``ROW_INTERVAL`` per client.

Bytes are counted on the subscriber's side of a real WebSocket (the text of every frame).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.client import connect
from synced_store.client.transport import Connection, WebSocketConnector, sync_url
from synced_store.testing import create_test_harness, wait_for_key_match

pytestmark = pytest.mark.e2e
UPDATES = 1000


class Doc(BaseModel):
    text: str
    status: str


class SetText(BaseModel):
    id: str
    text: str
    status: str


class Grow(BaseModel):
    id: str
    updates: int
    chunk: int
    pace: float = 0.0  # seconds between updates (a stream's pace; 0: as fast as it can)


schema = define_schema(
    1,
    tables={"docs": table(Doc)},
    mutators={"setText": {"input": SetText}},
    actions={"grow": {"input": Grow, "output": dict}},
)


async def set_text(ctx: Any, input: SetText) -> None:
    await ctx.table("docs").set(input.id, {"text": input.text, "status": input.status})


async def grow(ctx: Any, input: Grow) -> dict[str, Any]:
    """Rewrite the whole row ``updates`` times, each time with a longer text."""
    text = ""
    for i in range(input.updates):
        text += f"{i:05d} ".ljust(input.chunk, "abcdefghij"[i % 10])
        last = i == input.updates - 1
        if input.pace:
            await asyncio.sleep(input.pace)
        await ctx.mutate(
            "setText", {"id": input.id, "text": text, "status": "done" if last else "streaming"}
        )
    return {"size": len(text)}


backend = define_backend_config(schema, {"setText": set_text}, {"grow": grow})


class CountingConnector:
    """A real WebSocket connector that counts the bytes of every frame it receives."""

    def __init__(self, url: str) -> None:
        self._real = WebSocketConnector(url)
        self.received = 0
        self.frames = 0
        self.texts: list[bytes] = []

    async def connect(self) -> Connection:
        conn = await self._real.connect()
        outer = self

        class Counting:
            async def send(self, frame: bytes) -> None:
                await conn.send(frame)

            async def recv(self) -> str | bytes:
                frame = await conn.recv()
                data = frame if isinstance(frame, bytes) else frame.encode()
                outer.received += len(data)
                outer.frames += 1
                outer.texts.append(data)
                return frame

            async def close(self) -> None:
                await conn.close()

        return Counting()


async def measure(
    append_deltas: bool,
    *,
    subscribers: int,
    chunk: int,
    tmp: Any,
    counters: list[CountingConnector] | None = None,
    updates: int = UPDATES,
    pace: float = 0.0,
) -> tuple[int, list[int], list[int]]:
    """``(final size, bytes per subscriber, frames per subscriber)`` for one streamed row;
    the subscribers' connectors are appended to ``counters``."""
    async with await create_test_harness(backend, data_dir=tmp, append_deltas=append_deltas) as h:
        subs = []
        for i in range(subscribers):
            counter = CountingConnector(sync_url(h.url, h.instance_id))
            client = await connect(
                h.url, backend, instance_id=h.instance_id, token=f"s{i}", connector=counter
            )
            h.clients.append(client)
            await client.wait_for_server_data(10)
            counter.received = counter.frames = 0
            counter.texts.clear()
            subs.append((client, counter))
            if counters is not None:
                counters.append(counter)
        caller = await h.create_client("caller")
        out = await caller.action.grow(id="d", updates=updates, chunk=chunk, pace=pace)
        size = out["size"]
        await asyncio.gather(
            *(
                wait_for_key_match(
                    c,
                    table="docs",
                    key="d",
                    timeout=60,
                    match=lambda v: v["status"] == "done" and len(v["text"]) == size,
                )
                for c, _ in subs
            )
        )
        final_row = len('{"text":"","status":"done"}') + size
        return final_row, [n.received for _, n in subs], [n.frames for _, n in subs]


async def test_append_deltas_cost_about_the_final_size(tmp_path: Any) -> None:
    final, received, frames = await measure(True, subscribers=3, chunk=320, tmp=tmp_path / "a")
    for got in received:
        assert got <= 1.5 * final, f"{got} bytes for a {final}-byte row ({got / final:.2f}x)"
    # The naive baseline, same workload: every update resends the whole row.
    n_final, n_received, _ = await measure(False, subscribers=1, chunk=320, tmp=tmp_path / "n")
    assert n_final == final
    assert n_received[0] > 100 * final, f"naive: {n_received[0] / final:.0f}x"
    print(
        f"\nfinal row {final} B; deltas {[round(r / final, 2) for r in received]}x "
        f"in {frames[0]} frames; naive {n_received[0] / final:.0f}x"
    )


async def test_small_appends_are_merged_into_few_pokes(tmp_path: Any) -> None:
    """32-byte appends: a poke's ~110-byte envelope would triple the bytes if every update
    were its own poke; the session's per-row window (``ROW_INTERVAL``) merges them."""
    final, received, frames = await measure(True, subscribers=2, chunk=32, tmp=tmp_path)
    assert max(frames) < UPDATES // 4
    assert max(received) <= 1.5 * final, f"{max(received) / final:.2f}x in {frames} frames"


async def test_a_streamed_row_travels_as_append_frames(tmp_path: Any) -> None:
    """After one ordinary poke names the row (``bind``), every further append to it is a
    compact ``[check, cookie_delta, handle, suffix]`` frame: a few bytes of envelope."""
    counters: list[CountingConnector] = []
    final, received, _ = await measure(
        True, subscribers=1, chunk=8, tmp=tmp_path, counters=counters, updates=60, pace=0.03
    )
    frames = [orjson.loads(t) for t in counters[0].texts]
    binds = [f for f in frames if type(f) is dict and "bind" in f]
    appends = [f for f in frames if type(f) is list]
    assert len(binds) == 1, "the row is named once per connection"
    assert len(appends) >= 30, f"{len(appends)} append frames in {len(frames)}"
    handle = binds[0]["bind"][0][0]
    cookie = None
    for f in frames:  # the frames chain: each one continues from the cookie the previous reached
        if type(f) is list:
            assert cookie is not None
            assert f[0] == cookie % 10, (f, cookie)
            assert f[1] % 10
            assert f[2] == handle
            cookie += f[1]
        elif f.get("type") == "poke":
            cookie = f["cookie"]
    suffix_bytes = sum(len(f[3].encode()) for f in appends)
    frame_bytes = sum(len(orjson.dumps(f)) for f in appends)
    assert frame_bytes <= suffix_bytes + 16 * len(appends), (frame_bytes, suffix_bytes)
    assert received[0] < final + 16 * len(appends) + 1500, "the other frames stay few and small"
