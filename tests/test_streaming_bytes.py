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

    async def connect(self) -> Connection:
        conn = await self._real.connect()
        outer = self

        class Counting:
            async def send(self, text: str) -> None:
                await conn.send(text)

            async def recv(self) -> str:
                text = await conn.recv()
                outer.received += len(text.encode())
                outer.frames += 1
                return text

            async def close(self) -> None:
                await conn.close()

        return Counting()


async def measure(
    append_deltas: bool, *, subscribers: int, chunk: int, tmp: Any
) -> tuple[int, list[int], list[int]]:
    """``(final size, bytes per subscriber, frames per subscriber)`` for one streamed row."""
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
            subs.append((client, counter))
        caller = await h.create_client("caller")
        out = await caller.action.grow(id="d", updates=UPDATES, chunk=chunk)
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
