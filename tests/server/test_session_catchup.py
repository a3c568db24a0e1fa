"""Catch-ups in parts: whatever commits while a catch-up is read and sent (including enough
to overflow the session's queue and start another phase), the client — applying the parts
atomically at the final one, as the engine does — holds exactly the committed rows, with one
consistent cookie, after every poke. A real SQLite store; commits written to it and fed to
the session the way the instance's writer does.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synced_store.core.patch import op_key, op_row, set_op
from synced_store.errors import StorageError
from synced_store.protocol.append import AppendDecoder
from synced_store.protocol.codec import decode_server_message, encode, frame_json
from synced_store.protocol.messages import Poke
from synced_store.server import fanout as fanout_mod
from synced_store.server.fanout import Fanout
from synced_store.server.limits import ServerLimits
from synced_store.server.session import Session
from synced_store.server.wire import SharedFrame
from synced_store.storage.sqlite import SqliteInstanceStore
from synced_store.types import RowKey

KEYS = [RowKey("", "t", f"k{i:02}") for i in range(12)] + [
    RowKey("u:alice", "t", "mine"),
    RowKey("u:bob", "t", "bobs"),  # never visible to alice
]


class Wire:
    """Writes at once (a fan-out frame) or through ``send`` (the session's own sends)."""

    direct = True

    def __init__(self, send: Callable[[bytes], Awaitable[None]], now: Any = None) -> None:
        self._send = send
        self._now = now

    def try_write(self, frame: SharedFrame) -> bool:
        if self._now is None:
            return False
        self._now(frame.payload)
        return True

    async def write(self, payload: bytes) -> None:
        await self._send(payload)


def session(
    store: SqliteInstanceStore,
    wire: Wire,
    *,
    cookie: int | None = None,
    limits: ServerLimits | None = None,
    fanout: Fanout | None = None,
) -> Session:
    """A session of alice's client ``c`` on ``store`` (with a fan-out of its own)."""
    fanout = fanout or Fanout({})
    s = Session(
        wire=wire,
        fanout=fanout,
        close=_no_close,
        store=store,
        user_id="alice",
        client_id="c",
        cookie=cookie,
        known_lmid=0,
        limits=limits or ServerLimits(),
    )
    fanout._sessions["c"] = s
    return s


async def _no_close(code: int, reason: str) -> None:
    raise AssertionError(f"closed: {code} {reason}")


class PartReceiver:
    """Accumulates non-final parts and applies them at the final one, checking the chain."""

    def __init__(self) -> None:
        self.rows: dict[RowKey, tuple[str, Any]] = {}
        self.cookie: int | None = None
        self.parts: list[Poke] = []
        self.decoder = AppendDecoder()
        self.arrived = asyncio.Event()
        self.multi_part = 0
        self.sends = 0
        self.errors: list[int] = []
        self.parts_with_errors = 0

    async def send(self, text: bytes) -> None:
        if (self.sends + 1) % 3 == 0:
            await asyncio.sleep(0)  # let commits land between parts
        self.apply(text)

    def apply(self, text: bytes) -> None:
        self.sends += 1
        msg = decode_server_message(text)
        if type(msg) is list:
            msg = self.decoder.expand(msg, self.cookie)
        else:
            assert type(msg) is Poke
            self.decoder.observe(msg)
        if msg.final is False:
            self.parts.append(msg)
            return
        parts, self.parts = [*self.parts, msg], []
        if len(parts) > 1:
            self.multi_part += 1
        for p in parts:
            if p.errors:
                self.parts_with_errors += 1
                self.errors += [e.id for e in p.errors]
        reset = parts[0].reset
        if not reset:
            assert msg.base_cookie == self.cookie, "out-of-sequence poke"
        rows = {} if reset else dict(self.rows)
        for p in parts:
            for op in p.patch:
                key = op_key(op)
                assert key.ns in ("", "u:alice"), f"a row alice may not see: {key}"
                row = op_row(op, rows.get(key))
                if row is None:
                    rows.pop(key, None)
                else:
                    rows[key] = row
        self.rows = rows
        self.cookie = msg.cookie
        self.arrived.set()


async def commit(
    store: SqliteInstanceStore, writes: list[tuple[int, str]], truth: dict[RowKey, Any]
) -> tuple[int, dict[RowKey, Any]]:
    """Write to the store like the instance's writer; returns the version and the changes."""
    tx = await store.begin()
    version = tx.version + 1
    changes: dict[RowKey, Any] = {}
    for k, text in writes:
        key = KEYS[k]
        if text == "":
            if await tx.remove(key, version) or key in changes:
                changes[key] = None
            truth.pop(key, None)
            continue
        value = {"text": text}
        encoded = encode(value)
        await tx.write(key, "", encoded, version)
        op = encode(set_op(key, "", value))
        changes[key] = ("", value, msgspec.Raw(op), len(op))
        truth[key] = ("", value)
    # Like the instance: a batch that changed nothing keeps the version and tells nobody.
    await tx.commit(version if changes else tx.version)
    return store.version, changes


write = st.tuples(st.integers(0, len(KEYS) - 1), st.sampled_from(["", "a", "bb" * 20, "c" * 90]))
plans = st.lists(st.lists(write, min_size=1, max_size=6), min_size=1, max_size=30)


async def _run(tmp: Path, seed_rows: int, plan: list[list[tuple[int, str]]], budget: int) -> None:
    # A new file per example (``id(plan)`` may repeat once a plan is freed).
    store = SqliteInstanceStore(Path(tempfile.mkdtemp(dir=tmp)) / "c.sqlite3")
    truth: dict[RowKey, Any] = {}
    seed = [(i % len(KEYS), "seed" * (i % 7 + 1)) for i in range(seed_rows)]
    if seed:
        await commit(store, seed, truth)
    rx = PartReceiver()
    fanout = Fanout({}, deltas=True)
    fanout.start(store.version)
    s = session(
        store,
        Wire(rx.send, rx.apply),
        fanout=fanout,
        # Parts of ~one row, and a queue that overflows after a few commits.
        limits=ServerLimits(catch_up_part_bytes=64, max_outbound_bytes=budget),
    )
    sender = asyncio.get_running_loop().create_task(s.run_sender())
    visible = lambda: {k: v for k, v in truth.items() if k.ns in ("", "u:alice")}  # noqa: E731
    # The last version with a change alice may see (the session tells her of no other).
    seen = store.version
    try:
        for i, writes in enumerate(plan):
            version, changes = await commit(store, writes, truth)
            if changes:
                fanout.on_commit(version, changes, {}, {})
                if any(k.ns in ("", "u:alice") for k in changes):
                    seen = version
            if i % 5 == 4:
                s.request_pull()  # a client's pull: a catch-up from its cookie, mid-stream
            await asyncio.sleep(0)
        while rx.cookie is None or rx.cookie < seen or s._need_pull or s._has_poke():
            rx.arrived.clear()
            waiter = asyncio.ensure_future(rx.arrived.wait())
            done, _ = await asyncio.wait(
                {waiter, sender}, timeout=10, return_when="FIRST_COMPLETED"
            )
            if sender in done:
                sender.result()
            assert done, "no poke arrived"
        assert rx.rows == visible()
        assert rx.parts == []
    finally:
        s.closed = True
        s._wake.set()
        await asyncio.gather(sender, return_exceptions=True)
        await store.close()


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed_rows=st.integers(0, 40), plan=plans, budget=st.sampled_from([150, 400, 8 * 1024 * 1024])
)
def test_parts_and_interleaved_commits_always_add_up_to_the_committed_rows(
    tmp_path: Path, seed_rows: int, plan: list[list[tuple[int, str]]], budget: int
) -> None:
    fanout_mod.ROW_INTERVAL, saved = 0.0, fanout_mod.ROW_INTERVAL  # every commit flushed
    try:
        asyncio.run(_run(tmp_path, seed_rows, plan, budget))
    finally:
        fanout_mod.ROW_INTERVAL = saved


def test_a_large_catch_up_travels_in_many_parts(tmp_path: Path) -> None:
    async def main() -> PartReceiver:
        store = SqliteInstanceStore(tmp_path / "big.sqlite3")
        truth: dict[RowKey, Any] = {}
        await commit(store, [(i % 12, "x" * 500) for i in range(12)], truth)
        rx = PartReceiver()
        s = session(store, Wire(rx.send), limits=ServerLimits(catch_up_part_bytes=1000))
        task = asyncio.get_running_loop().create_task(s.run_sender())
        await rx.arrived.wait()
        assert rx.rows == {k: v for k, v in truth.items() if k.ns == ""}
        s.closed = True
        s._wake.set()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        return rx

    rx = asyncio.run(main())
    assert rx.multi_part == 1
    assert rx.sends >= 6  # 12 rows of ~520 bytes in parts of ~1000


def test_rejected_mutation_reports_of_a_catch_up_travel_in_its_parts(tmp_path: Path) -> None:
    async def main() -> PartReceiver:
        store = SqliteInstanceStore(tmp_path / "errs.sqlite3")
        truth: dict[RowKey, Any] = {}
        await commit(store, [(i % 12, "x" * 200) for i in range(12)], truth)

        tx = await store.begin()
        await tx.set_client("c", "alice", 60, tx.version)
        for i in range(1, 61):
            await tx.add_error(
                "c", {"id": i, "name": "m", "kind": "invalid_input", "message": "no"}
            )
        await tx.commit(tx.version)
        rx = PartReceiver()
        s = session(store, Wire(rx.send), limits=ServerLimits(catch_up_part_bytes=300))
        task = asyncio.get_running_loop().create_task(s.run_sender())
        await rx.arrived.wait()
        s.closed = True
        s._wake.set()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        return rx

    rx = asyncio.run(main())
    assert sorted(rx.errors) == list(range(1, 61))  # each once
    assert rx.parts_with_errors >= 3  # 25 per part before the last


def test_compaction_during_an_incremental_catch_up_ends_it_for_a_reset(tmp_path: Path) -> None:
    """Retention forgets a tombstone the catch-up still had to send: the session ends
    (the client reconnects and gets a reset) instead of sending a state without the deletion."""

    async def main() -> tuple[list[dict[str, Any]], BaseException | None]:
        store = SqliteInstanceStore(tmp_path / "c.sqlite3")
        truth: dict[RowKey, Any] = {}
        base, _ = await commit(store, [(0, "hello")], truth)  # the client has seen this
        await commit(store, [(i % 11 + 1, "x" * 200) for i in range(11)], truth)
        await commit(store, [(0, "")], truth)  # deleted later: a tombstone after the base
        parts: list[dict[str, Any]] = []

        async def send(text: bytes) -> None:
            parts.append(frame_json(text))
            if len(parts) == 1:  # retention runs (in-process or `synced-store compact`)
                tx = await store.begin()
                await tx.compact_tombstones(tx.version)
                await tx.commit(tx.version)
            await asyncio.sleep(0)

        s = session(store, Wire(send), cookie=base, limits=ServerLimits(catch_up_part_bytes=300))
        task = asyncio.get_running_loop().create_task(s.run_sender())
        done, _ = await asyncio.wait({task}, timeout=10)
        error = task.exception() if done else None
        s.closed = True
        s._wake.set()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
        return parts, error

    parts, error = asyncio.run(main())
    assert isinstance(error, StorageError)
    assert "compacted" in str(error)
    assert all(not p.get("final", True) for p in parts), "no final part: nothing was applied"
