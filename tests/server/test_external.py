"""Cross-instance stores through a real server: ``mutate_external`` delivered exactly once
(also across kill -9 between the two commits), failures recorded without blocking the outbox,
``external_store`` reads with the caller's visibility, and the client's live view."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from external_app import backend
from synced_store.client import connect
from synced_store.client.external import view_client_id
from synced_store.core.external import (
    EXTERNAL_JOB,
    MAX_EXTERNAL_MUTATIONS,
    MAX_EXTERNAL_READ_ITEMS,
)
from synced_store.errors import ActionError, MutationFailedError
from synced_store.server.external import CRASH_ENV, RECEIVED_TABLE
from synced_store.testing import ServerProcess, TestHarness, create_test_harness, wait_for
from synced_store.testing.waiters import wait_for_key_exists, wait_for_value

TESTS = str(Path(__file__).resolve().parents[1])
TIMEOUT = 20.0


def finished(h: TestHarness) -> asyncio.Queue[dict[str, Any]]:
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    h.app.state.actions.on_job_finished.append(lambda inst, job: q.put_nowait(job))
    return q


async def harness(tmp_path: Path) -> TestHarness:
    return await create_test_harness(
        backend,
        data_dir=tmp_path,
        instance_id="room1",
        action_options={"backoff_base": 0.01, "max_attempts": 3},
    )


async def room_keys(client: Any) -> list[str]:
    return [k.item_key for k in await client.query(lambda ctx: ctx.table("rooms").keys())]


async def test_mutate_external_lands_once_in_the_target_after_the_commit(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        q = finished(h)
        alice = await h.create_client("alice")
        lobby = await h.create_client("bob", instance_id="lobby")
        res = await alice.mutate.createRoom(lobby="lobby", id="room1", title="Room one")
        await asyncio.wait_for(res.confirmed, TIMEOUT)
        row = await wait_for_key_exists(lobby, table="rooms", key="room1", timeout=TIMEOUT)
        assert row["title"] == "Room one"
        # The target mutator ran as the caller's user, and knows where the call came from.
        assert row["source"] == {
            "type": "external-store",
            "user_id": "alice",
            "store": {"instance_id": "room1"},
        }
        assert row["is_system"] is False  # an app mutator, not a hook
        job = await asyncio.wait_for(q.get(), TIMEOUT)
        assert (job["name"], job["status"]) == (EXTERNAL_JOB, "done")
        assert job["output"] == {"instance": "lobby", "mutator": "addRoom", "duplicate": False}
        await wait_for_value(lobby, table="counts", key="rooms", value={"n": 1}, timeout=TIMEOUT)
        # The client's optimistic pass did nothing external: the lobby has no other room.
        assert await room_keys(lobby) == ["room1"]
        # The idempotency key lives in a server-only row of the target: clients never see it.
        target = h.app.state.registry.instances["lobby"]
        keys = await target.store.reader().scan(
            "s", RECEIVED_TABLE, None, exclusive=False, reverse=False, limit=10
        )
        assert len(keys) == 1
        assert keys[0][1]["from"] == "room1"


async def test_a_failed_caller_sends_nothing(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        lobby = await h.create_client("bob", instance_id="lobby")
        bad = await alice.mutate.createRoom(lobby="lobby", id="nope", title="x", fail=True)
        with pytest.raises(MutationFailedError):
            await asyncio.wait_for(bad.confirmed, TIMEOUT)
        ok = await alice.mutate.createRoom(lobby="lobby", id="yes", title="y")
        await asyncio.wait_for(ok.confirmed, TIMEOUT)
        await wait_for_key_exists(lobby, table="rooms", key="yes", timeout=TIMEOUT)
        assert await room_keys(lobby) == ["yes"]


async def test_a_failing_target_mutator_is_recorded_and_does_not_block(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        h.allowed_errors.append("failed for good")
        q = finished(h)
        alice = await h.create_client("alice")
        lobby = await h.create_client("bob", instance_id="lobby")
        r = await alice.mutate.createRoom(lobby="lobby", id="boom", title="t", mutator="explode")
        await asyncio.wait_for(r.confirmed, TIMEOUT)  # the caller's own mutation commits
        job = await asyncio.wait_for(q.get(), TIMEOUT)
        # Failed at once (no retries: the mutator's error is permanent), with the error.
        assert job["status"] == "failed"
        assert job["attempts"] == 1
        assert "explode boom" in job["error"]
        # The outbox goes on: the next delivery lands.
        r = await alice.mutate.createRoom(lobby="lobby", id="after", title="t")
        await wait_for_key_exists(lobby, table="rooms", key="after", timeout=TIMEOUT)
        assert not await lobby.query(lambda ctx: ctx.table("notes").has("boom"))
        # An unknown mutator (say, a newer server's outbox row) and invalid input are
        # recorded the same way.
        room = h.app.state.registry.instances["room1"]
        for bad in (
            {"instance": "lobby", "mutator": "noSuchMutator", "input": {}, "key": "k1"},
            {"instance": "lobby", "mutator": "addRoom", "input": {"id": 1}, "key": "k2"},
            {"instance": "../etc", "mutator": "addRoom", "input": {}, "key": "k3"},
        ):
            await room.in_writer(lambda tx, bad=bad: tx.add_job(EXTERNAL_JOB, bad, "alice", 0.0))
        room.on_jobs_enqueued()
        errors = []
        while len(errors) < 3:
            job = await asyncio.wait_for(q.get(), TIMEOUT)
            if job["status"] == "failed":
                errors.append(job["error"])
        assert any("unknown mutator 'noSuchMutator'" in e for e in errors)
        assert any("failed in instance lobby" in e for e in errors)
        assert any("invalid instance id" in e for e in errors)


async def test_limits_and_depth(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        h.allowed_errors.append("failed for good")
        q = finished(h)
        alice = await h.create_client("alice")
        lobby = await h.create_client("bob", instance_id="lobby")
        # Too many external mutations in one mutation: refused on the client pass already.
        with pytest.raises(Exception, match=f"at most {MAX_EXTERNAL_MUTATIONS}"):
            await alice.mutate.createRoom(
                lobby="lobby", id="many", title="t", times=MAX_EXTERNAL_MUTATIONS + 1
            )
        # Invalid target id: refused at once too.
        with pytest.raises(Exception, match="invalid instance id"):
            await alice.mutate.createRoom(lobby="../x", id="r", title="t")
        # Depth 1: a delivered mutator may not call mutate_external itself.
        await alice.mutate.createRoom(lobby="lobby", id="c", title="t", mutator="chain")
        job = await asyncio.wait_for(q.get(), TIMEOUT)
        assert job["status"] == "failed"
        assert "one level deep" in job["error"]
        r = await alice.mutate.createRoom(lobby="lobby", id="fine", title="t", times=3)
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        await wait_for_value(lobby, table="counts", key="rooms", value={"n": 3}, timeout=TIMEOUT)
        assert sorted(await room_keys(lobby)) == ["fine-0", "fine-1", "fine-2"]


async def test_external_store_reads_with_the_callers_visibility(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        lobby_alice = await h.create_client("alice", instance_id="lobby")
        lobby_bob = await h.create_client("bob", instance_id="lobby")
        for c, args in (
            (lobby_alice, {"key": "pub", "text": "public"}),
            (lobby_alice, {"key": "a-private", "text": "alice's", "private": True}),
            (lobby_bob, {"key": "b-private", "text": "bob's", "private": True}),
            (lobby_bob, {"key": "secret", "text": "server only", "secret": True}),
            (lobby_bob, {"key": "b-public", "text": "also public"}),
        ):
            await asyncio.wait_for((await c.mutate.setNote(args)).confirmed, TIMEOUT)
        alice = await h.create_client("alice")
        await alice.mutate.readLobby(lobby="lobby")
        seen = await wait_for_key_exists(
            alice, table="notes", key="seen-server", private=True, timeout=TIMEOUT
        )
        got = eval(seen["text"])  # the repr of a dict of lists of str, written by the test app
        assert got["public"] == ["b-public", "pub"]  # no server-only row
        assert got["mine"] == ["a-private"]  # never bob's
        assert got["refused"] == ["other:PermissionDeniedError", "server:PermissionDeniedError"]
        # A client pass reads an empty external store.
        local = await alice.query(
            lambda ctx: ctx.private_of_user("alice").table("notes").get("seen-client")
        )
        assert local is None or eval(local["text"])["public"] == []
        # An instance that does not exist reads as empty, and is not created by the read.
        await alice.mutate.readLobby(lobby="nowhere")
        await wait_for(
            alice,
            lambda ctx: ctx.private_of_user("alice").table("notes").get("seen-server"),
            lambda v: v is not None and eval(v["text"])["public"] == [],
            timeout=TIMEOUT,
        )
        assert not await h.app.state.registry.storage.exists("nowhere")


async def test_actions_read_and_mutate_external(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        lobby = await h.create_client("bob", instance_id="lobby")
        out = await alice.action.registerFromAction(lobby="lobby", id="a1")
        assert out == {"rooms_before": 0}
        await wait_for_key_exists(lobby, table="rooms", key="a1", timeout=TIMEOUT)
        out = await alice.action.registerFromAction(lobby="lobby", id="a2")
        assert out["rooms_before"] >= 1
        await wait_for_value(lobby, table="counts", key="rooms", value={"n": 2}, timeout=TIMEOUT)


async def test_client_external_store_is_a_live_read_only_view(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        view = await alice.external_store("lobby")
        assert await alice.external_store("lobby") is view  # one view per instance
        assert not hasattr(view, "mutate")
        # One client of the lobby per parent client (a persisted store reuses it).
        assert view._client.client_id == view_client_id(alice.client_id, "lobby")
        await view.wait_for_server_data(TIMEOUT)
        seen: list[list[str]] = []
        unsub = view.subscribe(
            lambda ctx: ctx.table("rooms").keys(),
            lambda keys: seen.append([k.item_key for k in keys]),
        )
        await alice.mutate.createRoom(lobby="lobby", id="live", title="t")
        await wait_for(view._client, lambda ctx: ctx.table("rooms").has("live"), timeout=TIMEOUT)
        await alice.mutate.createRoom(lobby="lobby", id="live2", title="t")
        rows = await wait_for(
            view._client,
            lambda ctx: ctx.table("rooms").keys(),
            lambda k: len(k) == 2,
            timeout=TIMEOUT,
        )
        assert [k.item_key for k in rows] == ["live", "live2"]
        assert seen[0] == []
        assert seen[-1] == ["live", "live2"]
        unsub()
        # Visibility as this user: another user's private rows of the lobby never arrive.
        bob = await h.create_client("bob", instance_id="lobby")
        await bob.mutate.setNote(key="bobs", text="private", private=True)
        await bob.mutate.setNote(key="pub", text="public")
        await wait_for(view._client, lambda ctx: ctx.table("notes").has("pub"), timeout=TIMEOUT)
        assert not await view.query(
            lambda ctx: ctx.private_of_user("alice").table("notes").has("bobs")
        )
        await alice.close()  # closes the view with it
        assert view._client.is_ended()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["before", "after"])
async def test_exactly_once_across_kill_9_between_the_commits(tmp_path: Path, where: str) -> None:
    """The server is killed (SIGKILL) after the caller's commit and before the target's
    (``before``), or after the target's commit and before the outbox row is marked done
    (``after``): after a restart the room is in the lobby exactly once."""
    await kill_between_the_commits(tmp_path, where, None)


@pytest.mark.slow
async def test_exactly_once_across_kill_9_on_postgres(tmp_path: Path, pg_dsn: str) -> None:
    """On PostgreSQL the outbox is the shared jobs table and the key a server-only row."""
    await kill_between_the_commits(tmp_path, "after", pg_dsn)


async def kill_between_the_commits(tmp_path: Path, where: str, database: str | None) -> None:
    server = ServerProcess(
        "external_app:backend",
        tmp_path / "data",
        pythonpath=[TESTS],
        env={CRASH_ENV: where},
        database=database,
        actions={"job_lease": 1.0},
    )
    server.start()
    alice = await connect(
        server.url, backend, instance_id="room1", token="alice", reconnect_delay=(0.01, 0.1)
    )
    try:
        res = await alice.mutate.createRoom(lobby="lobby", id="room1", title="t")
        # The process kills itself in the window; the caller's mutation is committed already.
        assert server.proc is not None
        code = await asyncio.to_thread(server.proc.wait, 30)
        assert code == -signal.SIGKILL
        server.proc = None
        server.env.pop(CRASH_ENV)
        server.start()  # same port, same data dir: the outbox job runs again
        await asyncio.wait_for(res.confirmed, TIMEOUT)
        lobby = await connect(server.url, backend, instance_id="lobby", token="bob")
        try:
            await wait_for_value(
                lobby, table="counts", key="rooms", value={"n": 1}, timeout=TIMEOUT
            )
            assert await room_keys(lobby) == ["room1"]
            # A later delivery still lands, once (and the counter proves nothing ran twice).
            await alice.mutate.createRoom(lobby="lobby", id="room2", title="t")
            await wait_for_value(
                lobby, table="counts", key="rooms", value={"n": 2}, timeout=TIMEOUT
            )
            assert await room_keys(lobby) == ["room1", "room2"]
        finally:
            await lobby.close()
    finally:
        await alice.close()
        server.kill()


async def test_external_reads_are_bounded(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        n = MAX_EXTERNAL_READ_ITEMS + 1
        await h.seed_instance(
            {"rooms": {f"r{i:05d}": {"id": f"r{i:05d}", "title": "t"} for i in range(n)}},
            instance_id="big",
        )
        alice = await h.create_client("alice")
        # An unbounded read of more than 1000 rows is refused with a clear error...
        with pytest.raises(ActionError, match="more than 1000 rows; pass limit="):
            await alice.action.registerFromAction(lobby="big", id="x")
        # ...and nothing was sent: the action failed before its mutate_external.
        assert not await h.app.state.registry.storage.exists("lobby")
