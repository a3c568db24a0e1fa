"""The fan-out and its sessions: whatever mix of shared frames, append frames and lagging pokes
they send, every receiver that applies them in order holds exactly the committed rows it may
see after every flush — and a frame is encoded once for every session that needs the same bytes.

Sessions run for real (their sender tasks, a real SQLite store for the initial catch-up);
commits are fed to the fan-out the way the instance's writer does; each receiver is the
client's decoding path (``AppendDecoder`` + the patch ops), checking the cookie chain as the
engine does. Wires are fakes of the one seam under test: they write at once unless paused.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synced_store.core.patch import op_key, op_row, set_op
from synced_store.protocol.append import AppendDecoder, AppendHandles
from synced_store.protocol.codec import MAX_FRAME_BYTES, decode_server_message, encode
from synced_store.protocol.messages import MutationErrorReport, Poke, PushResponse
from synced_store.server import fanout as fanout_mod
from synced_store.server.fanout import Fanout
from synced_store.server.limits import ServerLimits
from synced_store.server.session import Session
from synced_store.server.wire import AsgiWire, SharedFrame, wire_for
from synced_store.storage.sqlite import SqliteInstanceStore
from synced_store.types import RowKey

#: How long :meth:`Room.settled` waits for the sessions to send what they have.
SETTLE_SECONDS = 30.0
KEYS = [RowKey("", "messages", f"m{i}") for i in range(4)] + [
    RowKey("u:alice", "notes", "n"),
    RowKey("u:bob", "notes", "n"),
    RowKey("s", "jobs", "j"),
]


class Receiver:
    """Applies frames the way the client does and keeps the cookie chain."""

    def __init__(self, user: str) -> None:
        self.own = "u:" + user
        self.rows: dict[RowKey, tuple[str, Any]] = {}
        self.cookie: int | None = None
        self.decoder = AppendDecoder()
        self.append_frames = 0
        self.frames = 0
        self.replies: list[Any] = []
        self.parts: list[Poke] = []
        #: How many commits each frame covered (its cookie minus its base cookie).
        self.spans: list[int] = []

    def apply(self, payload: bytes) -> None:
        self.frames += 1
        msg = decode_server_message(payload)
        if type(msg) is list:
            msg = self.decoder.expand(msg, self.cookie)
            self.append_frames += 1
        elif type(msg) is not Poke:
            self.replies.append(msg)
            return
        self.decoder.observe(msg)
        if msg.final is False:  # a part of a catch-up: applied with the final part
            self.parts.append(msg)
            return
        parts, self.parts = [*self.parts, msg], []
        reset = parts[0].reset
        if not reset:
            assert msg.cookie is not None
            assert msg.base_cookie is not None
            assert msg.base_cookie == self.cookie, "out-of-sequence poke"
            self.spans.append(msg.cookie - msg.base_cookie)
        rows = {} if reset else dict(self.rows)
        for part in parts:
            for op in part.patch:
                key = op_key(op)
                assert key.ns in ("", self.own), f"a row this user may not see: {key}"
                row = op_row(op, rows.get(key))
                if row is None:
                    rows.pop(key, None)
                else:
                    rows[key] = row
        self.rows = rows
        self.cookie = msg.cookie


class FakeWire:
    """Writes at once unless paused; a paused wire's writes wait (``suspend``: every write of
    the sender task gives the loop a turn, as a socket write may)."""

    direct = True

    def __init__(self, rx: Receiver, *, suspend: bool = False) -> None:
        self.rx = rx
        self.suspend = suspend
        self.paused = False
        self._resumed = asyncio.Event()
        self.shared: list[SharedFrame] = []

    def pause(self) -> None:
        self.paused = True
        self._resumed.clear()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    def try_write(self, frame: SharedFrame) -> bool:
        if self.paused:
            return False
        self.shared.append(frame)
        self.rx.apply(frame.payload)
        return True

    async def write(self, payload: bytes) -> None:
        if self.suspend:
            await asyncio.sleep(0)
        while self.paused:
            await self._resumed.wait()
        self.rx.apply(payload)


async def _no_close(code: int, reason: str) -> None:
    raise AssertionError(f"session closed: {code} {reason}")


def _idle(s: Session) -> bool:
    """Nothing left to send (or its socket is paused with nothing but rows queued)."""
    busy = s._need_pull or s._sending or s._has_poke() or bool(s._extras)
    return not busy or (getattr(s._wire, "paused", False) and not s._need_pull)


class FakeClock:
    """The fan-out's clock and timers, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.timers: list[list[Any]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> Any:
        entry: list[Any] = [self.now + delay, fn]
        self.timers.append(entry)
        timers = self.timers

        class Handle:
            def cancel(self) -> None:
                if entry in timers:
                    timers.remove(entry)

        return Handle()

    def advance(self, dt: float) -> None:
        """Move time on, running the timers that fall due."""
        self.now += dt
        for entry in sorted(self.timers, key=lambda e: float(e[0])):
            if entry[0] <= self.now and entry in self.timers:
                self.timers.remove(entry)
                entry[1]()


class Room:
    """A store, its fan-out and sessions, as an instance holds them; commits are written to the
    store (so a session that joins catches up from it) and fanned out like the writer does."""

    def __init__(self, tmp: Path) -> None:
        self.store = SqliteInstanceStore(Path(tempfile.mkdtemp(dir=tmp)) / "i.sqlite")
        self.sessions: dict[str, Session] = {}
        self.clock = FakeClock()
        self.fanout = Fanout(
            self.sessions, clock=lambda: self.clock.now, call_later=self.clock.call_later
        )
        self.fanout.start(self.store.version)
        self.senders: dict[str, asyncio.Task[None]] = {}

    @property
    def version(self) -> int:
        return self.store.version

    def join(self, cid: str, user: str, *, suspend: bool = False) -> tuple[Session, FakeWire]:
        rx = Receiver(user)
        wire = FakeWire(rx, suspend=suspend)
        s = Session(
            wire=wire,
            fanout=self.fanout,
            close=_no_close,
            store=self.store,
            user_id=user,
            client_id=cid,
            cookie=None,
            known_lmid=0,
        )
        self.sessions[cid] = s
        self.senders[cid] = asyncio.get_running_loop().create_task(s.run_sender())
        return s, wire

    async def commit(self, changes: dict[RowKey, Any], lmids: dict[str, int] | None = None) -> int:
        tx = await self.store.begin()
        version = tx.version + 1
        for key, ch in changes.items():
            if ch is None:
                await tx.remove(key, version)
            else:
                await tx.write(key, ch[0], encode(ch[1]), version)
        await tx.commit(version)
        self.fanout.on_commit(version, changes, lmids or {}, {})
        return version

    async def settled(self) -> None:
        """Wait until every session sent what it has (or its sender stopped: re-raised).

        Bounded by time, not by loop turns: a catch-up part is read in a worker thread, which
        on a loaded machine can take longer than any fixed number of turns."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        while loop.time() < deadline:
            for t in self.senders.values():
                if t.done():
                    t.result()
                    raise AssertionError("a sender stopped")
            if all(_idle(s) for s in self.sessions.values()):
                return
            await asyncio.sleep(0)
        raise AssertionError("the sessions never settled")

    async def close(self) -> None:
        for s in self.sessions.values():
            s.closed = True
            s._wake.set()
        await asyncio.gather(*self.senders.values(), return_exceptions=True)
        self.fanout.close()
        await self.store.close()


def row(text: str, status: str = "incomplete") -> dict[str, Any]:
    return {"text": text, "status": status}


def changed(key: RowKey, value: Any, sk: str = "") -> dict[RowKey, Any]:
    encoded = encode(set_op(key, sk, value))
    return {key: (sk, value, msgspec.Raw(encoded), len(encoded))}


# -- property: every receiver holds what it may see -----------------------------------------

# One change to one row: grow its text (mostly: rows are being streamed), flip its status,
# move it (sort key), delete it or make it a plain string.
change = st.tuples(
    st.sampled_from(KEYS[:3] * 4 + KEYS[3:]),
    st.sampled_from(["append"] * 12 + ["status", "move", "delete", "scalar"]),
    st.text(alphabet="ab c", min_size=1, max_size=6),
)
# Steps: a commit some milliseconds after the previous step (within a row's window or not),
# time passing (held flushes go out), the second session's socket pausing or resuming, a new
# session joining (it catches up from the store while commits may be held).
step = st.one_of(
    st.tuples(st.just("commit"), st.lists(change, min_size=1, max_size=2), st.integers(0, 60)),
    st.tuples(st.just("tick"), st.integers(1, 60)),
    st.tuples(st.just("pause"), st.booleans()),
    st.tuples(st.just("join"), st.sampled_from(["alice", "bob"])),
)
plans = st.lists(step, min_size=1, max_size=40)


async def _run(tmp: Path, plan: list[Any]) -> Room:
    room = Room(tmp)
    room.fanout.handles = AppendHandles(capacity=2)  # five streaming rows: handles get rebound
    _, paused = room.join("a2", "alice", suspend=True)
    wires = [room.join("a1", "alice")[1], paused, room.join("b1", "bob")[1]]
    truth: dict[RowKey, tuple[str, Any]] = {}
    was_object: dict[RowKey, dict[str, Any]] = {}

    def check() -> None:
        for w in wires:
            if not w.paused:
                visible = {k: v for k, v in truth.items() if k.ns in ("", w.rx.own)}
                assert w.rx.rows == visible

    try:
        await room.settled()  # the initial catch-ups
        for kind, *args in plan:
            if kind == "commit":
                commit, ms = args
                room.clock.advance(ms / 1000)
                changes: dict[RowKey, Any] = {}
                for key, what, text in commit:
                    sk, value = truth.get(key, ("", row("")))
                    if what == "delete":
                        truth.pop(key, None)
                        changes[key] = None
                        continue
                    # A plain-string row that becomes an object again comes back as it was
                    # (so a delta against that old object would look plausible).
                    value = dict(value if type(value) is dict else was_object[key])
                    if what == "scalar":  # the row stops being an object (no deltas then)
                        was_object[key] = value
                        value = text
                    elif what == "append":
                        value["text"] += text
                    elif what == "status":
                        value["status"] = text
                    else:
                        sk = text
                    truth[key] = (sk, value)
                    changes.update(changed(key, value, sk))
                await room.commit(changes)
            elif kind == "tick":
                room.clock.advance(args[0] / 1000)
            elif kind == "pause":
                if args[0]:
                    paused.pause()
                else:
                    paused.resume()
            else:
                wires.append(room.join(f"j{len(wires)}", args[0])[1])
            await room.settled()
            if not room.fanout.holding:
                check()
        paused.resume()
        room.clock.advance(1.0)
        await room.settled()
        check()
    finally:
        await room.close()
    return room


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=plans)
def test_every_receiver_always_holds_the_rows_it_may_see(tmp_path: Path, plan: list[Any]) -> None:
    asyncio.run(_run(tmp_path, plan))


def _plan(*batches: list[list[tuple[RowKey, str, str]]]) -> list[Any]:
    """Commits 50 ms apart (each flushed at once), a batch's commits in the same instant."""
    steps: list[Any] = []
    for batch in batches:
        for i, commit in enumerate(batch):
            steps.append(("commit", commit, 0 if i else 50))
    return steps


def test_a_stream_of_appends_uses_append_frames(tmp_path: Path) -> None:
    grow = [[[(KEYS[0], "append", "ab")], [(KEYS[1], "append", "c")]] for _ in range(10)]
    room = asyncio.run(_run(tmp_path, _plan(*grow)))
    assert room.fanout.flushes >= 20


def _streamed_around(tmp_path: Path, *middle: list[list[tuple[RowKey, str, str]]]) -> None:
    """Stream row ``KEYS[0]`` (so it has a handle), run the ``middle`` batches, stream again."""
    grow = [[[(KEYS[0], "append", "ab")]] for _ in range(4)]
    asyncio.run(_run(tmp_path, _plan(*grow, *middle, *grow)))


def test_a_moved_and_grown_row_keeps_its_new_sort_key(tmp_path: Path) -> None:
    """A streaming row (named by a handle with its sort key) that moves and grows in one flush
    must not travel as an append frame, which would carry the old sort key."""
    _streamed_around(tmp_path, [[(KEYS[0], "move", "z")], [(KEYS[0], "append", "c")]])


def test_a_grown_row_whose_status_changed_too_is_not_an_append_frame(tmp_path: Path) -> None:
    _streamed_around(tmp_path, [[(KEYS[0], "append", "c"), (KEYS[0], "status", "done")]])


def test_a_row_that_stops_being_an_object_gets_no_delta_against_its_old_value(
    tmp_path: Path,
) -> None:
    _streamed_around(tmp_path, [[(KEYS[0], "scalar", "plain")]])


# -- encode once, write at once -------------------------------------------------------------


def test_followers_of_a_commit_share_one_encoded_frame(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        wires = [room.join(f"c{i}", f"user{i}")[1] for i in range(5)]
        await room.settled()
        for text in ("a", "ab", "abc"):
            room.clock.advance(0.05)  # out of the row's window: flushed at once
            await room.commit(changed(KEYS[0], row(text)))
            frames = [w.shared[-1] for w in wires]
            # No loop turn since the commit: written from inside it, the same object to all.
            assert all(f is frames[0] for f in frames)
        assert all(w.rx.rows[KEYS[0]] == ("", row("abc")) for w in wires)
        assert wires[0].rx.append_frames == 1  # named by the second flush, appended by the third
        await room.close()

    asyncio.run(main())


def test_a_confirmation_goes_only_to_its_client(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        s1, w1 = room.join("c1", "alice")
        _, w2 = room.join("c2", "bob")
        await room.settled()
        await room.commit(changed(KEYS[0], row("hi")), lmids={"c1": 4})
        assert s1.known_lmid == 4
        assert w1.shared[-1] is not w2.shared[-1]
        assert b'"last_mutation_id":4' in w1.shared[-1].payload
        assert b"last_mutation_id" not in w2.shared[-1].payload
        await room.close()

    asyncio.run(main())


def test_a_commit_of_rows_the_session_cannot_see_sends_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        _, w = room.join("c", "alice")
        await room.settled()
        frames = w.rx.frames
        await room.commit(changed(KEYS[5], row("bob's")))
        await room.commit(changed(KEYS[6], row("server only")))
        await room.settled()
        assert w.rx.frames == frames, "a poke went out for rows this user cannot see"
        await room.commit(changed(KEYS[0], row("hi")))  # the next visible change
        assert w.rx.cookie == room.version
        await room.close()

    asyncio.run(main())


def test_a_paused_socket_makes_its_session_send_from_its_queue(tmp_path: Path) -> None:
    """Commits that land while a client's socket is paused merge into its own queue (one poke
    when it resumes); the other sessions keep getting every flush at once."""

    async def main() -> None:
        room = Room(tmp_path)
        _, slow = room.join("slow", "alice")
        _, fast = room.join("fast", "bob")
        await room.settled()
        slow.pause()
        for text in ("a", "ab", "abc", "abcd"):
            room.clock.advance(0.05)
            await room.commit(changed(KEYS[0], row(text)))
            assert fast.rx.rows[KEYS[0]][1]["text"] == text
        assert slow.rx.rows.get(KEYS[0]) is None
        frames = slow.rx.frames
        slow.resume()
        await room.settled()
        assert slow.rx.frames == frames + 1  # the four commits, merged
        assert slow.rx.rows == fast.rx.rows
        room.clock.advance(0.05)
        await room.commit(changed(KEYS[0], row("abcde")))  # and it follows again
        assert slow.rx.rows == fast.rx.rows
        await room.close()

    asyncio.run(main())


def test_the_window_merges_a_streamed_rows_commits(tmp_path: Path) -> None:
    """A row flushed less than ROW_INTERVAL ago holds the queue for the rest of the window:
    commits meanwhile merge into one flush, and replies wait for it."""
    assert fanout_mod.ROW_INTERVAL == 0.040

    async def main() -> None:
        room = Room(tmp_path)
        clock = room.clock
        _, w = room.join("c", "alice")
        await room.settled()
        await room.commit(changed(KEYS[0], row("a")))  # not sent recently: at once
        assert w.rx.rows[KEYS[0]][1]["text"] == "a"
        clock.advance(0.010)
        await room.commit(changed(KEYS[0], row("ab")))  # 10 ms later: held for 30 ms more
        clock.advance(0.010)
        await room.commit(changed(KEYS[0], row("abc")))
        reply = PushResponse(last_mutation_id=3)
        room.sessions["c"].send_message(reply)  # waits for the held commits
        assert w.rx.rows[KEYS[0]][1]["text"] == "a"
        assert w.rx.replies == []
        assert [round(t - 100, 3) for t, _ in clock.timers] == [0.04]
        clock.advance(0.020)
        assert w.rx.rows[KEYS[0]][1]["text"] == "abc"
        assert w.rx.spans[-1] == 2  # both held commits in one frame
        assert w.rx.replies == [reply]
        await room.close()

    asyncio.run(main())


def test_ten_commits_in_one_flush_never_make_an_append_frame(tmp_path: Path) -> None:
    """A cookie delta that is a multiple of 10 would defeat the check digit: such a flush is an
    ordinary poke (the receiver's decoder refuses the frame otherwise)."""

    async def main() -> None:
        room = Room(tmp_path)
        _, w = room.join("c", "alice")
        await room.settled()
        text = ""
        for _ in range(3):  # name the row: it streams, and its appends are append frames
            text += "x"
            room.clock.advance(0.05)
            await room.commit(changed(KEYS[0], row(text)))
        frames = w.rx.append_frames
        assert frames >= 1
        room.clock.advance(0.001)
        for _ in range(10):  # held by the window, flushed together
            text += "x"
            await room.commit(changed(KEYS[0], row(text)))
        room.clock.advance(0.05)
        assert w.rx.spans[-1] == 10
        assert w.rx.append_frames == frames
        assert w.rx.rows[KEYS[0]][1]["text"] == text
        await room.close()

    asyncio.run(main())


def test_a_session_that_joins_while_commits_are_held_gets_no_stale_delta(
    tmp_path: Path,
) -> None:
    """A new session's catch-up reads commits the fan-out still holds; when they are flushed,
    their deltas (against the value before them) would double its text: it gets whole rows."""

    async def main() -> None:
        room = Room(tmp_path)
        _, w1 = room.join("c1", "alice")
        await room.settled()
        await room.commit(changed(KEYS[0], row("a")))
        room.clock.advance(0.010)
        await room.commit(changed(KEYS[0], row("ab")))  # held: the catch-up below reads it
        _, w2 = room.join("c2", "bob")
        await room.settled()
        assert w2.rx.rows[KEYS[0]][1]["text"] == "ab"
        room.clock.advance(0.05)
        await room.settled()
        assert w1.rx.rows == w2.rx.rows
        for text in ("abc", "abcd"):  # and it follows from then on
            room.clock.advance(0.05)
            await room.commit(changed(KEYS[0], row(text)))
            await room.settled()
            assert w1.rx.rows == w2.rx.rows
        assert w2.shared[-1] is w1.shared[-1]
        await room.close()

    asyncio.run(main())


def test_a_late_joiner_is_told_the_bindings_it_missed(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        _, w1 = room.join("c1", "alice")
        await room.settled()
        text = ""
        for _ in range(3):
            text += "x"
            room.clock.advance(0.05)
            await room.commit(changed(KEYS[0], row(text)))
        assert w1.rx.append_frames >= 1  # bound and streaming
        _, w2 = room.join("c2", "bob")
        await room.settled()
        for _ in range(3):
            text += "y"
            room.clock.advance(0.05)
            await room.commit(changed(KEYS[0], row(text)))
            await room.settled()
        assert w2.rx.rows == w1.rx.rows
        assert w2.rx.append_frames >= 1  # after one poke that told it the binding
        await room.close()

    asyncio.run(main())


class _FailsAfterCatchUp:
    """A wire that can never write at once and fails every write after the catch-up."""

    direct = True

    def __init__(self, fail: Callable[[], Awaitable[None]]) -> None:
        self.calls = 0
        self.caught_up = asyncio.Event()
        self._fail = fail

    def try_write(self, frame: SharedFrame) -> bool:
        return False

    async def write(self, payload: bytes) -> None:
        self.calls += 1
        if self.calls > 1:
            await self._fail()
        self.caught_up.set()


@pytest.mark.parametrize("how", ["reset", "cancelled"])
def test_a_failed_write_ends_the_sender_not_the_commit(tmp_path: Path, how: str) -> None:
    async def main() -> None:
        async def reset() -> None:
            raise ConnectionResetError("gone")

        async def cancelled() -> None:
            gone = asyncio.get_running_loop().create_future()
            gone.cancel()
            await gone

        room = Room(tmp_path)
        wire = _FailsAfterCatchUp(reset if how == "reset" else cancelled)
        s = Session(
            wire=wire,
            fanout=room.fanout,
            close=_no_close,
            store=room.store,
            user_id="alice",
            client_id="c",
            cookie=None,
            known_lmid=0,
        )
        room.sessions["c"] = s
        sender = asyncio.get_running_loop().create_task(s.run_sender())
        await wire.caught_up.wait()
        await room.commit(changed(KEYS[0], row("hi")))  # the error stays out of the commit
        with pytest.raises((ConnectionResetError, asyncio.CancelledError)):
            await asyncio.wait_for(asyncio.shield(sender), 5)
        await room.store.close()

    asyncio.run(main())


# -- found in review: catch-ups around a held window, ordering, sizes -----------------------


class _Gate:
    """Holds the next catch-up's first read until ``open`` is set (a slow first part)."""

    def __init__(self, store: Any) -> None:
        self.open = asyncio.Event()
        self.entered = asyncio.Event()
        real = store.catch_up

        def catch_up(base: Any, **kw: Any) -> Any:
            cu = real(base, **kw)
            first_read = cu.next_part

            async def next_part(n: int) -> Any:
                self.entered.set()
                await self.open.wait()
                cu.next_part = first_read
                return await first_read(n)

            cu.next_part = next_part
            store.catch_up = real
            return cu

        store.catch_up = catch_up


@pytest.mark.parametrize("returning", [True, False])
def test_a_catch_up_that_ends_while_a_commit_is_held_leaves_no_stale_delta(
    tmp_path: Path, returning: bool
) -> None:
    """The catch-up stops at V and leaves out rows changed after it; a commit at V+1 still held
    by the window must reach the client as a whole row, not as a delta against a value it never
    got (a returning client would append to an older text and diverge for good; a new one would
    fail on a merge for a row it does not have)."""

    async def main() -> None:
        room = Room(tmp_path)
        _, w1 = room.join("c1", "alice")
        await room.settled()
        v0 = await room.commit(changed(KEYS[0], row("x")))
        room.clock.advance(0.05)
        await room.commit(changed(KEYS[0], row("xa")))
        gate = _Gate(room.store)
        rx = Receiver("bob")
        if returning:  # it saw v0
            rx.rows, rx.cookie = {KEYS[0]: ("", row("x"))}, v0
        wire = FakeWire(rx)
        s2 = Session(
            wire=wire,
            fanout=room.fanout,
            close=_no_close,
            store=room.store,
            user_id="bob",
            client_id="c2",
            cookie=rx.cookie,
            known_lmid=0,
        )
        room.sessions["c2"] = s2
        room.senders["c2"] = asyncio.get_running_loop().create_task(s2.run_sender())
        await gate.entered.wait()  # the catch-up stops at the version committed now
        room.clock.advance(0.010)
        await room.commit(changed(KEYS[0], row("xab")))  # held by the row's window
        assert room.fanout.holding
        gate.open.set()
        await room.settled()
        room.clock.advance(0.05)  # the held flush
        await room.settled()
        for text in ("xabc", "xabcd"):
            room.clock.advance(0.05)
            await room.commit(changed(KEYS[0], row(text)))
            await room.settled()
        assert wire.rx.rows == w1.rx.rows == {KEYS[0]: ("", row("xabcd"))}
        await room.close()

    asyncio.run(main())


class _NeverAtOnce(FakeWire):
    """A wire that never writes at once (any server but uvicorn's sans-I/O one)."""

    direct = False

    def try_write(self, frame: SharedFrame) -> bool:
        return False


def test_a_reply_waits_for_held_commits_on_a_lagging_session_too(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        rx = Receiver("alice")
        s = Session(
            wire=_NeverAtOnce(rx),
            fanout=room.fanout,
            close=_no_close,
            store=room.store,
            user_id="alice",
            client_id="c",
            cookie=None,
            known_lmid=0,
        )
        room.sessions["c"] = s
        room.senders["c"] = asyncio.get_running_loop().create_task(s.run_sender())
        await room.settled()
        await room.commit(changed(KEYS[0], row("a")))
        await room.settled()
        room.clock.advance(0.010)
        await room.commit(changed(KEYS[0], row("ab")))  # an action's last write: held
        s.send_message(PushResponse(last_mutation_id=9))  # the action's result, say
        await room.settled()
        assert rx.replies == []
        room.clock.advance(0.05)
        await room.settled()
        assert rx.rows[KEYS[0]][1]["text"] == "ab"
        assert rx.replies == [PushResponse(last_mutation_id=9)]
        await room.close()

    asyncio.run(main())


def test_a_reply_never_overtakes_a_poke_queued_before_it(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        s, w = room.join("c", "alice")
        await room.settled()
        order: list[str] = []
        apply = w.rx.apply

        def record(payload: bytes) -> None:
            order.append(payload.decode())
            apply(payload)

        w.rx.apply = record  # type: ignore[method-assign]
        w.pause()  # the client reads slowly for a moment
        s.send_message(PushResponse(last_mutation_id=1))  # the sender waits for the socket
        await asyncio.sleep(0)
        room.clock.advance(0.05)
        await room.commit(changed(KEYS[0], row("hi")), lmids={"c": 2})  # queued
        s.send_message(PushResponse(last_mutation_id=2))  # answered after it
        w.resume()
        await room.settled()
        kinds = [("poke" if '"poke"' in t else "push_response:" + t[-2]) for t in order]
        assert kinds == ["push_response:1", "poke", "push_response:2"]
        await room.close()

    asyncio.run(main())


def test_a_report_told_by_a_catch_up_is_not_told_again(tmp_path: Path) -> None:
    """The catch-up's final part carries the reports of held commits; a flush that lands while
    that part waits for the socket must not repeat them."""

    async def main() -> None:
        room = Room(tmp_path)
        s, w = room.join("c", "alice")
        await room.settled()
        await room.commit(changed(KEYS[0], row("a")))
        room.clock.advance(0.010)
        tx = await room.store.begin()
        v = tx.version + 1
        await tx.write(KEYS[0], "", encode(row("ab")), v)
        await tx.set_client("c", "alice", 1, v)
        await tx.add_error("c", {"id": 1, "name": "m", "kind": "mutator_error", "message": "no"})
        await tx.commit(v)
        err = MutationErrorReport(id=1, name="m", kind="mutator_error", message="no")
        room.fanout.on_commit(v, changed(KEYS[0], row("ab")), {"c": 1}, {"c": [err]})
        assert room.fanout.holding
        reported: list[int] = []
        apply = w.rx.apply

        def record(payload: bytes) -> None:
            msg = decode_server_message(payload)
            if type(msg) is Poke and msg.errors:
                reported.extend(e.id for e in msg.errors)
            apply(payload)

        w.rx.apply = record  # type: ignore[method-assign]
        w.pause()
        s.request_pull()  # a catch-up, whose final part waits for the socket
        await asyncio.sleep(0.05)
        room.clock.advance(0.05)  # meanwhile the held flush goes out
        w.resume()
        await room.settled()
        assert reported == [1]
        assert w.rx.rows[KEYS[0]][1]["text"] == "ab"
        await room.close()

    asyncio.run(main())


def test_a_flush_larger_than_a_frame_reaches_followers_in_parts(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        _, w = room.join("c", "alice")
        await room.settled()
        sizes: list[int] = []
        apply = w.rx.apply

        def record(payload: bytes) -> None:
            sizes.append(len(payload))
            apply(payload)

        w.rx.apply = record  # type: ignore[method-assign]
        big = {}
        for i in range(12):  # 12 rows of ~0.8 MB, each under the 1 MiB row limit
            big.update(changed(RowKey("", "docs", f"d{i}"), {"body": "x" * 800_000}))
        await room.commit(big)
        await room.settled()
        assert len(w.rx.rows) == 12
        assert max(sizes) <= MAX_FRAME_BYTES
        await room.close()

    asyncio.run(main())


def test_reports_stay_when_a_lagging_queue_overflows(tmp_path: Path) -> None:
    """More rejected mutations than the database keeps (100), then enough other writes to
    overflow the connection's queue: the catch-up that follows still tells of every one."""

    async def main() -> None:
        room = Room(tmp_path)
        s = Session(
            wire=FakeWire(Receiver("alice")),
            fanout=room.fanout,
            close=_no_close,
            store=room.store,
            user_id="alice",
            client_id="c",
            cookie=None,
            known_lmid=0,
            limits=ServerLimits(max_outbound_bytes=20_000),
        )
        w = s._wire
        room.sessions["c"] = s
        room.senders["c"] = asyncio.get_running_loop().create_task(s.run_sender())
        await room.settled()
        reported: list[int] = []
        apply = w.rx.apply  # type: ignore[attr-defined]

        def record(payload: bytes) -> None:
            msg = decode_server_message(payload)
            if type(msg) is Poke and msg.errors:
                reported.extend(e.id for e in msg.errors)
            apply(payload)

        w.rx.apply = record  # type: ignore[attr-defined]
        w.pause()  # type: ignore[attr-defined]
        errs = [
            MutationErrorReport(id=i, name="m", kind="mutator_error", message="no")
            for i in range(1, 151)
        ]
        room.fanout.on_commit(room.version, {}, {"c": 150}, {"c": errs})
        for i in range(10):
            room.clock.advance(0.05)
            await room.commit(changed(RowKey("", "docs", f"d{i}"), {"body": "y" * 5000}))
        assert s._need_pull  # the queue overflowed
        w.resume()  # type: ignore[attr-defined]
        await room.settled()
        assert sorted(set(reported)) == list(range(1, 151))
        await room.close()

    asyncio.run(main())


def test_a_server_other_than_uvicorns_sans_io_one_gets_the_waiting_wire() -> None:
    class Wsproto:  # what uvicorn's wsproto protocol looks like from here
        writable = asyncio.Event()
        close_sent = False
        conn = object()

        async def send(self, message: Any) -> None:
            pass

    async def send_text(text: str) -> None:
        pass

    assert isinstance(wire_for(Wsproto().send, send_text), AsgiWire)
