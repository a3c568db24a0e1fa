"""Session: whatever mix of pokes and append frames it sends, a receiver that applies them in
order holds exactly the committed rows after every send.

The session runs for real (its sender task, a real SQLite store for the initial catch-up) and
commits are fed to it the way the instance's writer does; the receiver is the client's decoding
path (``AppendDecoder`` + the patch ops), checking the cookie chain as the engine does.
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
from synced_store.protocol.codec import decode_server_message, encode
from synced_store.protocol.messages import Poke
from synced_store.server import session as session_mod
from synced_store.server.session import Session
from synced_store.storage.sqlite import SqliteInstanceStore
from synced_store.types import RowKey

KEYS = [RowKey("", "messages", f"m{i}") for i in range(4)] + [RowKey("u:alice", "notes", "n")]

# One change to one row: grow its text (mostly: rows are being streamed), flip its status,
# move it (sort key), delete it or make it a plain string. Three rows are hot, two cold.
change = st.tuples(
    st.sampled_from(KEYS[:3] * 4 + KEYS[3:]),
    st.sampled_from(["append"] * 12 + ["status", "move", "delete", "scalar"]),
    st.text(alphabet="ab c", min_size=1, max_size=6),
)
# Batches of commits, committed without a loop turn between them: a commit goes out at once
# when the session is idle, and merges with the next ones while a send is in flight.
batches = st.lists(
    st.lists(st.lists(change, min_size=1, max_size=2), min_size=1, max_size=3),
    min_size=1,
    max_size=40,
)


class Receiver:
    """Applies frames the way the client does and keeps the cookie chain.

    ``suspend``: every other send (from the second on) gives the loop a turn, as a socket
    write may. The session's first send (the catch-up) then finishes at once, so on_commit
    starts sending eagerly; the first eager send that suspends goes on in a task, and from
    then on the sender task sends and later commits merge behind a send in flight. Without
    ``suspend`` every commit goes out from inside on_commit.
    """

    def __init__(self, suspend: bool = True) -> None:
        self.suspend = suspend
        self.rows: dict[RowKey, tuple[str, Any]] = {}
        self.cookie: int | None = None
        self.decoder = AppendDecoder()
        self.append_frames = 0
        self.arrived = asyncio.Event()
        self.sends = 0
        #: How many commits each frame covered (its cookie minus its base cookie).
        self.spans: list[int] = []

    async def send(self, text: str) -> None:
        self.sends += 1
        if self.suspend and self.sends % 2 == 0:
            await asyncio.sleep(0)
        msg = decode_server_message(text)
        if type(msg) is list:
            msg = self.decoder.expand(msg, self.cookie)
            self.append_frames += 1
        else:
            assert type(msg) is Poke
            self.decoder.observe(msg)
        if not msg.reset:
            assert msg.cookie is not None
            assert msg.base_cookie is not None
            assert msg.base_cookie == self.cookie, "out-of-sequence poke"
            self.spans.append(msg.cookie - msg.base_cookie)
        for op in msg.patch:
            key = op_key(op)
            row = op_row(op, self.rows.get(key))
            if row is None:
                self.rows.pop(key, None)
            else:
                self.rows[key] = row
        self.cookie = msg.cookie
        self.arrived.set()


async def _run(
    tmp: Path, plan: list[list[list[tuple[RowKey, str, str]]]], suspend: bool = True
) -> Receiver:
    # A new file per example (``id(plan)`` may repeat once a plan is freed).
    store = SqliteInstanceStore(Path(tempfile.mkdtemp(dir=tmp)) / "i.sqlite")
    rx = Receiver(suspend)

    async def close(code: int, reason: str) -> None:
        raise AssertionError(f"session closed: {code} {reason}")

    s = Session(
        send=rx.send,
        close=close,
        store=store,
        user_id="alice",
        client_id="c1",
        cookie=None,
        known_lmid=0,
    )
    s._handles = AppendHandles(capacity=2)  # five streaming rows: handles get rebound
    sender = asyncio.get_running_loop().create_task(s.run_sender())
    truth: dict[RowKey, tuple[str, Any]] = {}
    was_object: dict[RowKey, dict[str, Any]] = {}
    version = store.version

    async def arrived() -> None:
        """Wait for the next frame; fail at once if the sender stopped (a frame was wrong)."""
        waiter = asyncio.ensure_future(rx.arrived.wait())
        done, _ = await asyncio.wait({waiter, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done:
            waiter.cancel()
            sender.result()  # re-raises the receiver's assertion
            raise AssertionError("the session's sender stopped")
        rx.arrived.clear()

    try:
        await arrived()  # the initial catch-up
        for batch in plan:
            for commit in batch:
                version += 1
                changes: dict[RowKey, Any] = {}
                for key, kind, text in commit:
                    sk, value = truth.get(key, ("", {"text": "", "status": "incomplete"}))
                    if kind == "delete":
                        truth.pop(key, None)
                        changes[key] = None
                        continue
                    # A plain-string row that becomes an object again comes back as it was
                    # (so a delta against that old object would look plausible).
                    value = dict(value if type(value) is dict else was_object[key])
                    if kind == "scalar":  # the row stops being an object (no deltas then)
                        was_object[key] = value
                        value = text
                    elif kind == "append":
                        value["text"] += text
                    elif kind == "status":
                        value["status"] = text
                    else:
                        sk = text
                    truth[key] = (sk, value)
                    encoded = encode(set_op(key, sk, value))
                    changes[key] = (sk, value, msgspec.Raw(encoded), len(encoded))
                s.on_commit(version, changes, None, None)
            while rx.cookie != version:
                await arrived()
            assert rx.rows == truth
    finally:
        s.closed = True
        s._wake.set()
        await asyncio.gather(sender, return_exceptions=True)
        await store.close()
    return rx


@pytest.fixture(autouse=True)
def _no_row_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """No per-row window in these tests: every batch goes out as soon as the sender runs."""
    monkeypatch.setattr(session_mod, "ROW_INTERVAL", 0.0)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=batches, suspend=st.booleans())
def test_the_receiver_always_holds_the_committed_rows(
    tmp_path: Path, plan: list[list[list[tuple[RowKey, str, str]]]], suspend: bool
) -> None:
    asyncio.run(_run(tmp_path, plan, suspend))


def test_a_stream_of_appends_uses_append_frames(tmp_path: Path) -> None:
    grow = [[[(KEYS[0], "append", "ab")], [(KEYS[1], "append", "c")]] for _ in range(10)]
    rx = asyncio.run(_run(tmp_path, grow))
    assert rx.append_frames >= 8  # after the first sends name the two rows, both share frames


def _streamed_around(tmp_path: Path, *middle: list[list[tuple[RowKey, str, str]]]) -> Receiver:
    """Stream row ``KEYS[0]`` (so it has a handle), run the ``middle`` batches, stream again."""
    grow = [[[(KEYS[0], "append", "ab")]] for _ in range(4)]
    return asyncio.run(_run(tmp_path, [*grow, *middle, *grow]))


def test_a_moved_and_grown_row_keeps_its_new_sort_key(tmp_path: Path) -> None:
    """A streaming row (named by a handle with its sort key) that moves and grows in one poke
    must not travel as an append frame, which would carry the old sort key."""
    _streamed_around(tmp_path, [[(KEYS[0], "move", "z")], [(KEYS[0], "append", "c")]])


def test_a_grown_row_whose_status_changed_too_is_not_an_append_frame(tmp_path: Path) -> None:
    _streamed_around(tmp_path, [[(KEYS[0], "append", "c"), (KEYS[0], "status", "done")]])


def test_ten_commits_in_one_send_never_make_an_append_frame(tmp_path: Path) -> None:
    """A cookie delta that is a multiple of 10 would defeat the check digit: such a send is an
    ordinary poke (the receiver's decoder refuses the frame otherwise)."""
    # Ten commits with no loop turn between them merge into one send (the receiver's sends
    # suspend, so the sender task sends: see Receiver).
    rx = _streamed_around(tmp_path, [[(KEYS[0], "append", "x")]] * 10)
    assert 10 in rx.spans, f"no send covered ten commits: {rx.spans}"
    assert rx.append_frames >= 4


def test_a_row_that_stops_being_an_object_gets_no_delta_against_its_old_value(
    tmp_path: Path,
) -> None:
    _streamed_around(tmp_path, [[(KEYS[0], "scalar", "plain")]])


def _one_change(text: str, key: RowKey = KEYS[0]) -> dict[RowKey, Any]:
    value = {"text": text, "status": "incomplete"}
    encoded = encode(set_op(key, "", value))
    return {key: ("", value, msgspec.Raw(encoded), len(encoded))}


class _Caught:
    """A session of user ``alice`` on a fresh store, its sender task started and its initial
    catch-up received by ``rx``."""

    def __init__(self, tmp: Path, send: Any) -> None:
        self.store = SqliteInstanceStore(tmp / "i.sqlite")
        self.session = Session(
            send=send,
            close=_no_close,
            store=self.store,
            user_id="alice",
            client_id="c",
            cookie=None,
            known_lmid=0,
        )

    async def __aenter__(self) -> Session:
        self.sender = asyncio.get_running_loop().create_task(self.session.run_sender())
        return self.session

    async def __aexit__(self, *exc: object) -> None:
        self.session.closed = True
        self.session._wake.set()
        await asyncio.gather(self.sender, return_exceptions=True)
        await self.store.close()


async def _turns(n: int) -> None:
    """Let the loop run ``n`` times (anything runnable would have run)."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_an_idle_session_sends_a_commit_from_inside_on_commit(tmp_path: Path) -> None:
    """No loop turn between the commit and the frame: the send starts inside on_commit."""

    async def main() -> None:
        rx = Receiver(suspend=False)
        async with _Caught(tmp_path, rx.send) as s:
            await rx.arrived.wait()  # the initial catch-up: it did not suspend
            s.on_commit(1, _one_change("hi"), None, None)
            assert rx.cookie == 1
            assert rx.rows[KEYS[0]] == ("", {"text": "hi", "status": "incomplete"})
            s.on_commit(2, {}, 7, None)  # a confirmation alone also goes out at once
            assert rx.cookie == 2

    asyncio.run(main())


def test_a_connection_whose_send_suspends_is_sent_to_by_its_sender_task(tmp_path: Path) -> None:
    """A send that gives the loop a turn (the catch-up shows it) rules out eager sends: the
    rest of such a send would run in a task other than the one that started it."""

    async def main() -> None:
        sends = 0
        arrived = asyncio.Event()

        async def send(text: str) -> None:
            nonlocal sends
            sends += 1  # counted when the send starts
            await asyncio.sleep(0)
            arrived.set()

        async with _Caught(tmp_path, send) as s:
            await arrived.wait()
            arrived.clear()
            s.on_commit(1, _one_change("hi"), None, None)
            assert sends == 1, "sent from inside on_commit despite a suspending send"
            await arrived.wait()
            assert sends == 2

    asyncio.run(main())


def test_a_commit_of_rows_the_session_cannot_see_sends_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        rx = Receiver(suspend=False)
        async with _Caught(tmp_path, rx.send) as s:
            await rx.arrived.wait()
            frames = rx.sends
            s.on_commit(1, _one_change("bob's", RowKey("u:bob", "notes", "n")), None, None)
            s.on_commit(2, _one_change("server", RowKey("s", "jobs", "j")), None, None)
            await _turns(20)
            assert rx.sends == frames, "a poke went out for rows this user cannot see"
            s.on_commit(3, _one_change("hi"), None, None)  # the next visible change
            assert rx.cookie == 3

    asyncio.run(main())


class _FailsAfterCatchUp:
    """A send that lets the initial catch-up through and runs ``fail`` on every later send."""

    def __init__(self, fail: Callable[[], Awaitable[None]]) -> None:
        self.calls = 0
        self.caught_up = asyncio.Event()
        self._fail = fail

    async def send(self, text: str) -> None:
        self.calls += 1
        if self.calls > 1:
            await self._fail()
        self.caught_up.set()


def test_a_failed_eager_send_ends_the_sender_with_its_error(tmp_path: Path) -> None:
    async def main() -> None:
        async def reset() -> None:
            raise ConnectionResetError("gone")

        tx = _FailsAfterCatchUp(reset)
        c = _Caught(tmp_path, tx.send)
        async with c as s:
            await tx.caught_up.wait()
            s.on_commit(1, _one_change("hi"), None, None)  # the error stays out of the commit
            assert tx.calls == 2  # the send ran inside on_commit
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(asyncio.shield(c.sender), 5)

    asyncio.run(main())


def test_a_send_cancelled_before_it_suspends_ends_the_connection_not_the_commit(
    tmp_path: Path,
) -> None:
    """A send that awaits an already-cancelled future raises CancelledError without ever
    suspending; it must not reach the writer that called on_commit."""

    async def main() -> None:
        async def cancelled() -> None:
            gone = asyncio.get_running_loop().create_future()
            gone.cancel()
            await gone

        tx = _FailsAfterCatchUp(cancelled)
        c = _Caught(tmp_path, tx.send)
        async with c as s:
            await tx.caught_up.wait()
            s.on_commit(1, _one_change("hi"), None, None)
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(asyncio.shield(c.sender), 5)

    asyncio.run(main())


async def _no_close(code: int, reason: str) -> None:
    raise AssertionError(f"session closed: {code} {reason}")
