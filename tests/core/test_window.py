"""core/window.py without a server: what a client holds of a windowed table (one run from its
floor up), how a page joins it when rows change while the page is in flight, and eviction."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.core.client_engine import ClientEngine
from synced_store.protocol.messages import DelOp, MergeOp, SetOp
from synced_store.types import RowKey


class Msg(BaseModel):
    text: str


class Mark(BaseModel):
    id: str


async def mark(ctx: Any, inp: Mark) -> None:
    row = await ctx.table("msgs").get(inp.id)
    await ctx.table("meta").set("marked", {"found": row is not None})


schema = define_schema(
    1,
    tables={"msgs": table(Msg), "meta": table()},
    mutators={"mark": {"input": Mark}},
    pull_windows={"msgs": 3},
    pull_max_bytes=1024,
)
backend = define_backend_config(schema, {"mark": mark})


def sk(i: int) -> str:
    return f"{i:04d}"


def row(i: int, text: str = "") -> SetOp:
    return SetOp(t="msgs", k=f"m{i}", sk=sk(i), v={"text": text or f"m{i}"})


def engine_with(*rows: int, cut: bool = True) -> ClientEngine:
    e = ClientEngine(backend, user_id="u", client_id="c")
    assert e.windows is not None
    e.windows.cut = [["", "msgs", sk(min(rows)), f"m{min(rows)}"]] if cut else []
    e.apply_server_update(cookie=1, patch=[row(i) for i in rows], last_mutation_id=0, reset=True)
    return e


def held(e: ClientEngine) -> list[str]:
    return sorted(k.item for k, _, _ in e.snapshot_rows() if k.table == "msgs")


def test_changes_below_the_floor_are_dropped() -> None:
    e = engine_with(7, 8, 9)
    e.apply_server_update(
        cookie=2,
        patch=[
            row(2, "edited"),  # below the floor, not held: dropped
            MergeOp(t="msgs", k="m3", sk=sk(3), append={"text": "!"}),  # not held: dropped
            DelOp(t="msgs", k="m1"),
            row(10),  # a new row at the top
            MergeOp(t="msgs", k="m8", sk=sk(8), append={"text": "!"}),  # held: applied
        ],
        last_mutation_id=None,
    )
    assert held(e) == ["m10", "m7", "m8", "m9"]
    assert e.store.get(RowKey("", "msgs", "m8")) == (sk(8), {"text": "m8!"})


def test_a_page_is_cut_at_a_row_that_changed_while_it_was_in_flight() -> None:
    e = engine_with(7, 8, 9)
    w = e.windows
    assert w is not None
    token = w.begin_page("", "msgs")
    # While the $scan is in flight: m5 is edited (dropped: below the floor). The page, read
    # before the edit, holds its old value: only the rows above m5 may join.
    e.apply_server_update(cookie=2, patch=[row(5, "new")], last_mutation_id=None)
    rows = [[sk(i), f"m{i}", {"text": f"m{i}"}] for i in (6, 5, 4)]
    assert w.apply_page(token, rows, True) == 1
    w.end_page()
    assert held(e) == ["m6", "m7", "m8", "m9"]
    # The next page reads m5 fresh.
    token = w.begin_page("", "msgs")
    assert token.floor is not None
    assert token.floor.item_key == "m6"
    rows = [[sk(i), f"m{i}", {"text": "new" if i == 5 else f"m{i}"}] for i in (5, 4, 3)]
    assert w.apply_page(token, rows, False) == 3
    w.end_page()
    assert held(e) == ["m3", "m4", "m5", "m6", "m7", "m8", "m9"]
    assert ("", "msgs") in w.complete


def test_a_page_whose_floor_moved_is_asked_again() -> None:
    e = engine_with(7, 8, 9)
    w = e.windows
    assert w is not None
    token = w.begin_page("", "msgs")
    e.apply_server_update(cookie=2, patch=[DelOp(t="msgs", k="m7")], last_mutation_id=None)
    assert w.apply_page(token, [[sk(6), "m6", {"text": "m6"}]], True) is None
    w.end_page()
    assert held(e) == ["m8", "m9"]


def test_eviction_keeps_the_window_and_rows_pending_mutations_read() -> None:
    e = engine_with(*range(10, 13))
    w = e.windows
    assert w is not None
    e.mutate("mark", {"id": "m11"})  # pending: it read m11
    big = "x" * 200
    for i in range(13, 25):
        e.apply_server_update(cookie=i, patch=[row(i, big)], last_mutation_id=None)
    # m10 went; m11, read by the pending mutation, stays, and so does everything above it.
    assert "m10" not in held(e)
    assert "m11" in held(e)
    e.apply_server_update(cookie=30, patch=[row(30, big)], last_mutation_id=1)  # confirmed
    assert "m11" not in held(e)
    assert w.held_bytes <= 1024 * 1.2
    assert {"m22", "m23", "m24", "m30"} <= set(held(e))  # the newest rows stay


def test_a_window_the_reset_did_not_cut_takes_every_new_row() -> None:
    e = engine_with(5, 6, cut=False)
    e.apply_server_update(cookie=2, patch=[row(1)], last_mutation_id=None)
    assert held(e) == ["m1", "m5", "m6"]


def test_eviction_waits_for_the_page_in_flight() -> None:
    """Rows arriving while a page is in flight do not evict (which would move the floor and
    discard the page, so fast arrivals could starve paging); the eviction runs when the last
    page ends."""
    e = engine_with(*range(10, 13))
    w = e.windows
    assert w is not None
    token = w.begin_page("", "msgs")
    big = "x" * 200
    for i in range(13, 25):
        e.apply_server_update(cookie=i, patch=[row(i, big)], last_mutation_id=None)
    assert w.held_bytes > 1024 * 1.2  # over budget, but the page is in flight
    assert w.apply_page(token, [[sk(9), "m9", {"text": "m9"}]], True) == 1
    w.end_page()
    assert "m9" in held(e)  # the page joined; paging raised the budget to what is held
    token = w.begin_page("", "msgs")
    w.end_page()  # a page that failed: nothing joined
    w.budget = 1024  # the app lowers the budget again: the next update evicts
    e.apply_server_update(cookie=40, patch=[row(40, big)], last_mutation_id=None)
    assert w.held_bytes <= 1024 * 1.2
    assert "m9" not in held(e)
    token = w.begin_page("", "msgs")
    for i in range(41, 50):
        e.apply_server_update(cookie=i, patch=[row(i, big)], last_mutation_id=None)
    assert w.held_bytes > 1024 * 1.2
    w.end_page()  # the page failed (say, offline): its end runs the eviction it held back
    assert w.held_bytes <= 1024 * 1.2
