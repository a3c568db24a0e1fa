"""Who may read another instance (``ctx.external_store``) and deliver into it
(``ctx.mutate_external``), through a real server: the same ``authorize`` a connection needs
and, on a ``members_only`` backend, membership (read-only: nothing joins, nothing is created);
a delivery never creates a members-only instance, runs ``on_init`` before the mutator where it
creates one, and runs the mutator with ``ctx.is_system`` False; an action's
``mutate_external`` counts against the job quotas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import external_app
from external_app import backend, hooks_backend, members_backend
from synced_store.core.external import EXTERNAL_JOB
from synced_store.core.keys import PUBLIC
from synced_store.errors import ActionError, MutationFailedError
from synced_store.server import ServerLimits
from synced_store.server.auth import Access
from synced_store.server.members import add_members
from synced_store.testing import TestHarness, create_test_harness
from synced_store.testing.waiters import wait_for_key_exists
from synced_store.types import RowKey

TIMEOUT = 20.0


def finished(h: TestHarness) -> asyncio.Queue[dict[str, Any]]:
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    h.app.state.actions.on_job_finished.append(lambda inst, job: q.put_nowait(job))
    return q


async def external_job(q: asyncio.Queue[dict[str, Any]]) -> dict[str, Any]:
    """The next finished ``$external`` job."""
    while True:
        job = await asyncio.wait_for(q.get(), TIMEOUT)
        if job["name"] == EXTERNAL_JOB:
            return job


async def room_keys(client: Any) -> list[str]:
    return [k.item_key for k in await client.query(lambda ctx: ctx.table("rooms").keys())]


async def seen_of(client: Any, user: str) -> dict[str, Any]:
    row = await wait_for_key_exists(
        client, table="notes", key="seen-server", private=True, timeout=TIMEOUT
    )
    seen: dict[str, Any] = eval(row["text"])  # a repr of lists of str, by the test app
    return seen


async def refused_at_connect(h: TestHarness, user: str, instance_id: str) -> bool:
    client = await h.create_client(user, instance_id=instance_id, wait=False)
    await client.wait_until(
        lambda: client.end_reason is not None or client.has_server_data, timeout=TIMEOUT
    )
    return client.end_reason == "auth_failed"


async def test_external_store_of_a_members_only_instance_needs_membership(tmp_path: Path) -> None:
    async with await create_test_harness(
        members_backend, data_dir=tmp_path, instance_id="secret"
    ) as h:
        h.allowed_errors.append("auth_failed")
        owner = await h.create_client("owner")  # creates 'secret': its owner
        res = await owner.mutate.setNote(key="plans", text="top secret")
        await asyncio.wait_for(res.confirmed, TIMEOUT)
        assert await refused_at_connect(h, "mallory", "secret")
        # Refused from a mutator of her own instance too: the mutation fails, nothing leaks.
        mallory = await h.create_client("mallory", instance_id="mine")
        res = await mallory.mutate.readLobby(lobby="secret")
        with pytest.raises(MutationFailedError, match="mallory is not a member of secret"):
            await asyncio.wait_for(res.confirmed, TIMEOUT)
        # ...and from an action.
        with pytest.raises(ActionError, match="mallory is not a member of secret"):
            await mallory.action.registerFromAction(lobby="secret", id="x")
        # A member reads it from another instance; the read added nobody.
        own2 = await h.create_client("owner", instance_id="own2")
        await own2.mutate.readLobby(lobby="secret")
        assert (await seen_of(own2, "owner"))["public"] == ["plans"]
        users = await owner.query(lambda ctx: ctx.table("$users").keys())
        assert [k.item_key for k in users] == ["owner"]
        # A missing instance still reads as empty, and the read creates nothing.
        await mallory.mutate.readLobby(lobby="nowhere")
        assert (await seen_of(mallory, "mallory"))["public"] == []
        assert not await h.app.state.registry.storage.exists("nowhere")


async def test_external_store_asks_authorize(tmp_path: Path) -> None:
    def authorize(user_id: str, instance_id: str, claims: Mapping[str, Any]) -> Access:
        return Access.DENY if (user_id, instance_id) == ("bob", "lobby") else Access.CREATE

    async with await create_test_harness(
        backend, data_dir=tmp_path, instance_id="room1", authorize=authorize
    ) as h:
        lobby = await h.create_client("alice", instance_id="lobby")
        await asyncio.wait_for((await lobby.mutate.setNote(key="n", text="t")).confirmed, TIMEOUT)
        bob = await h.create_client("bob")
        res = await bob.mutate.readLobby(lobby="lobby")
        with pytest.raises(MutationFailedError, match="bob is not authorized to open lobby"):
            await asyncio.wait_for(res.confirmed, TIMEOUT)
        alice = await h.create_client("alice")
        await alice.mutate.readLobby(lobby="lobby")
        assert (await seen_of(alice, "alice"))["public"] == ["n"]


async def test_a_delivery_into_a_members_only_instance_needs_membership(tmp_path: Path) -> None:
    async with await create_test_harness(
        members_backend,
        data_dir=tmp_path,
        instance_id="secret",
        action_options={"backoff_base": 0.01, "max_attempts": 3},
    ) as h:
        h.allowed_errors.append("failed for good")
        q = finished(h)
        owner = await h.create_client("owner")
        mallory = await h.create_client("mallory", instance_id="mine")
        await mallory.mutate.createRoom(lobby="secret", id="injected", title="t")
        job = await external_job(q)
        assert job["status"] == "failed"
        assert job["attempts"] == 1  # permanent: not retried
        assert "mallory is not a member of secret" in job["error"]
        assert await room_keys(owner) == []
        # Once a member, her deliveries land (as her, not as a system item).
        await add_members(h.app.state.registry, "secret", ["mallory"])
        await mallory.mutate.createRoom(lobby="secret", id="welcome", title="t")
        row = await wait_for_key_exists(owner, table="rooms", key="welcome", timeout=TIMEOUT)
        assert row["source"]["user_id"] == "mallory"
        assert row["is_system"] is False
        assert await room_keys(owner) == ["welcome"]


async def test_a_delivery_never_creates_a_members_only_instance(tmp_path: Path) -> None:
    async with await create_test_harness(
        members_backend, data_dir=tmp_path, instance_id="mine"
    ) as h:
        q = finished(h)
        h.allowed_errors.append("failed for good")
        mallory = await h.create_client("mallory")
        await mallory.mutate.createRoom(lobby="future", id="squat", title="t")
        job = await external_job(q)
        assert job["status"] == "failed"
        assert "instance future does not exist" in job["error"]
        assert not await h.app.state.registry.exists("future")
        # The real creator of 'future' connects later and becomes its owner.
        alice = await h.create_client("alice", instance_id="future")
        me = await wait_for_key_exists(alice, table="$users", key="alice", timeout=TIMEOUT)
        assert me["role"] == "owner"
        assert await room_keys(alice) == []


async def test_a_delivery_asks_authorize(tmp_path: Path) -> None:
    def authorize(user_id: str, instance_id: str, claims: Mapping[str, Any]) -> Access:
        if instance_id == "closed":
            return Access.DENY
        return Access.OPEN if instance_id.startswith("ro-") else Access.CREATE

    async with await create_test_harness(
        backend, data_dir=tmp_path, instance_id="room1", authorize=authorize
    ) as h:
        q = finished(h)
        h.allowed_errors.append("failed for good")
        alice = await h.create_client("alice")
        await alice.mutate.createRoom(lobby="closed", id="r", title="t")
        job = await external_job(q)
        assert (job["status"], job["attempts"]) == ("failed", 1)
        assert "alice is not authorized to open instance closed" in job["error"]
        # Allowed to open but not to create: a missing instance is not created.
        await alice.mutate.createRoom(lobby="ro-1", id="r", title="t")
        job = await external_job(q)
        assert job["status"] == "failed"
        assert "instance ro-1 does not exist" in job["error"]
        storage = h.app.state.registry.storage
        assert not await storage.exists("closed")
        assert not await storage.exists("ro-1")


async def test_a_delivery_runs_on_init_first_and_the_mutator_as_the_user(tmp_path: Path) -> None:
    async with await create_test_harness(
        hooks_backend, data_dir=tmp_path, instance_id="room1"
    ) as h:
        alice = await h.create_client("alice")
        await alice.mutate.createRoom(lobby="fresh", id="r1", title="t")
        bob = await h.create_client("bob", instance_id="fresh")
        row = await wait_for_key_exists(bob, table="rooms", key="r1", timeout=TIMEOUT)
        # The delivery created 'fresh': on_init ran first (no rooms yet), as its creator, as a
        # system item; the delivered mutator then ran as alice, not as a system item.
        init = await wait_for_key_exists(bob, table="notes", key="init", timeout=TIMEOUT)
        assert init["text"] == "alice 0 True"
        assert row["is_system"] is False
        assert row["source"] == {
            "type": "external-store",
            "user_id": "alice",
            "store": {"instance_id": "room1"},
        }


async def test_mutate_external_from_an_action_counts_against_the_job_quota(
    tmp_path: Path,
) -> None:
    external_app.PARK = asyncio.Event()
    try:
        async with await create_test_harness(
            backend,
            data_dir=tmp_path,
            instance_id="room1",
            limits=ServerLimits(max_queued_jobs_per_user=1),
        ) as h:
            started: asyncio.Queue[Any] = asyncio.Queue()
            h.app.state.actions.on_job_started.append(lambda inst, job: started.put_nowait(job))
            alice = await h.create_client("alice")
            room = h.app.state.registry.instances["room1"]
            # One unfinished job of alice's (a running action that waits).
            await room.in_writer(
                lambda tx: tx.add_job("park", {"lobby": "x"}, "alice", time.time())
            )
            room.on_jobs_enqueued()
            await asyncio.wait_for(started.get(), TIMEOUT)
            with pytest.raises(ActionError, match="unfinished action jobs"):
                await alice.action.registerFromAction(lobby="lobby", id="over")
            assert not await h.app.state.registry.storage.exists("lobby")
            external_app.PARK.set()
    finally:
        external_app.PARK = None


async def test_a_delivery_that_commits_after_its_timeout_is_done(tmp_path: Path) -> None:
    """Two slow deliveries to one target: the first commits inline and its timeout rolls it
    back; the second waits in the target's writer queue, and its timeout only ends the wait,
    so it commits later. Each job's status says whether its room landed."""
    timeout = external_app.SLOW / 3
    async with await create_test_harness(
        backend,
        data_dir=tmp_path,
        instance_id="room1",
        action_options={"timeout": timeout, "max_attempts": 1},
    ) as h:
        h.allowed_errors.append("failed for good")
        q = finished(h)
        alice = await h.create_client("alice")
        res = await alice.mutate.createRoom(
            lobby="lobby", id="s", title="t", times=2, mutator="slowRoom"
        )
        await asyncio.wait_for(res.confirmed, TIMEOUT)
        jobs = [await external_job(q), await external_job(q)]
        lobby = h.app.state.registry.instances["lobby"]
        landed = await lobby.in_writer(lambda tx: tx.read(RowKey(PUBLIC, "counts", "rooms")))
        n = landed[1]["n"] if landed is not None else 0
        assert n >= 1  # the queued one committed after its wait timed out
        assert sum(j["status"] == "done" for j in jobs) == n


async def test_a_retried_action_job_delivers_its_external_mutation_once(tmp_path: Path) -> None:
    external_app.FLAKY_FAILURES[0] = 1
    try:
        async with await create_test_harness(
            backend,
            data_dir=tmp_path,
            instance_id="room1",
            action_options={"backoff_base": 0.01, "max_attempts": 3},
        ) as h:
            q = finished(h)
            await h.create_client("alice")
            room = h.app.state.registry.instances["room1"]
            job = {"lobby": "lobby", "id": "once"}
            await room.in_writer(lambda tx: tx.add_job("registerFlaky", job, "alice", time.time()))
            room.on_jobs_enqueued()
            deliveries = [await external_job(q), await external_job(q)]
            assert sorted(d["output"]["duplicate"] for d in deliveries) == [False, True]
            lobby = await h.create_client("bob", instance_id="lobby")
            count = await wait_for_key_exists(lobby, table="counts", key="rooms", timeout=TIMEOUT)
            assert count == {"n": 1}
    finally:
        external_app.FLAKY_FAILURES[0] = 0
