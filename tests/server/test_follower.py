"""The commit follower (server/follower.py) in isolation: over a fake shared database and a
recording fan-out, local commits race remote ones in random interleavings, and the fan-out
must still see every version once, in order, with each local commit's confirmations, and end
at the database's state.

The database, the stores and the fan-out are fakes (a unit test of one layer); the real
thing runs in test_convergence_processes.py and tests/server/test_processes.py.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from synced_store.errors import InstanceUnavailableError
from synced_store.server.follower import CommitFollower
from synced_store.storage.records import ChangedRow, Changes
from synced_store.types import RowKey

SEEDS = 300


class Db:
    """Committed versions of one instance: ``rows[item] = (version, value or None)``."""

    def __init__(self) -> None:
        self.version = 0
        self.rows: dict[str, tuple[int, str | None]] = {}
        #: ``client id -> (version, last_mutation_id)`` of pushes committed.
        self.clients: dict[str, tuple[int, int]] = {}

    def commit(self, writes: dict[str, str | None]) -> int:
        self.version += 1
        for item, value in writes.items():
            self.rows[item] = (self.version, value)
        return self.version

    def since(self, after: int, upto: int, limit: int) -> Changes:
        rows = [
            ChangedRow(v, "", "t", item, "", value)
            for item, (v, value) in sorted(self.rows.items())
            if after < v <= upto
        ]
        clients = {cid: lmid for cid, (v, lmid) in self.clients.items() if after < v <= upto}
        return Changes(upto, None if len(rows) > limit else rows, clients)


async def _lag(rng: random.Random) -> None:
    for _ in range(rng.randint(0, 4)):
        await asyncio.sleep(0)  # a round trip: other tasks may run meanwhile


class Store:
    """A process's view of the shared instance (storage/base.py's InstanceStore, in part)."""

    shared = True

    def __init__(self, db: Db, rng: random.Random) -> None:
        self.db = db
        self.rng = rng
        self.version = db.version
        self.watcher: Any = None

    def watch(self, callback: Any) -> None:
        self.watcher = callback

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        await _lag(self.rng)
        got = self.db.since(after, self.db.version, limit)  # one consistent read
        await _lag(self.rng)
        return got


class Tx:
    """The writer's transaction: the lock is held, so the database stays at ``version``."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.version = db.version

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        return self.db.since(after, self.version, limit)


class Recorder:
    """The fan-out: every ``on_commit`` in order."""

    def __init__(self) -> None:
        self.commits: list[tuple[int, dict[RowKey, Any], dict[str, int]]] = []

    def on_commit(self, version: int, changes: Any, lmids: Any, errors: Any) -> None:
        self.commits.append((version, dict(changes), dict(lmids)))


async def _run(seed: int) -> None:
    rng = random.Random(seed)
    db = Db()
    store = Store(db, rng)
    fanout = Recorder()
    failed: list[BaseException] = []
    follower = CommitFollower("room", store, fanout, failed.append)  # type: ignore[arg-type]
    lock = asyncio.Lock()  # the instance's row lock, shared by both "processes"
    confirmed: dict[int, int] = {}  # local commit version -> its last_mutation_id

    async def remote(n: int) -> None:
        for i in range(n):
            await _lag(rng)
            async with lock:
                v = db.commit({f"r{rng.randint(0, 5)}": f'"remote{i}"', f"x{i % 3}": None})
            store.watcher(v if rng.random() < 0.8 else None)  # some news is lost

    async def local(n: int) -> None:
        for i in range(n):
            await _lag(rng)
            async with lock:
                tx = Tx(db)
                gap = await follower.read_gap(tx)  # type: ignore[arg-type]
                await _lag(rng)
                follower.landing = True
                item = f"r{rng.randint(0, 5)}"
                v = db.commit({item: f'"local{i}"'})
            store.version = v  # the commit's last step
            await _lag(rng)  # the COMMIT's answer travels back: remote reads may land now
            confirmed[v] = i + 1
            change = {RowKey("", "t", item): ("", f"local{i}", None, 0)}
            follower.committed(gap, v, change, {"me": i + 1}, {})

    await asyncio.gather(remote(rng.randint(0, 12)), local(rng.randint(0, 12)))
    store.watcher(None)  # the end: whatever is left is read
    await _settled(follower)
    assert follower.fanned == db.version
    assert not failed
    versions = [v for v, _, _ in fanout.commits]
    assert versions == sorted(set(versions)), f"seed {seed}: out of order: {versions}"
    for v, _, lmids in fanout.commits:  # every local commit confirmed with its own version
        if v in confirmed:
            assert lmids == {"me": confirmed[v]}, f"seed {seed}: {v} lost its confirmation"
        else:
            assert lmids == {}, f"seed {seed}: a remote commit carried a confirmation"
    assert set(confirmed) <= set(versions)
    state: dict[RowKey, Any] = {}
    for _, changes, _ in fanout.commits:
        state.update(changes)
    want = {
        RowKey("", "t", item): None if value is None else orjson.loads(value)
        for item, (_, value) in db.rows.items()
    }
    got = {k: None if v is None else v[1] for k, v in state.items() if k.item in db.rows}
    assert got == want, f"seed {seed}: the fan-out ended elsewhere than the database"
    assert store.version == db.version


async def _settled(follower: CommitFollower) -> None:
    """Wait for the follower's reading task (the last one started) to end."""
    task = follower._task
    if task is not None:
        await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("chunk", range(3))
async def test_local_and_remote_commits_reach_the_fan_out_in_order(chunk: int) -> None:
    for seed in range(chunk * SEEDS // 3, (chunk + 1) * SEEDS // 3):
        await _run(seed)


async def test_a_follower_that_fell_too_far_behind_fails_its_instance() -> None:
    db = Db()
    store = Store(db, random.Random(0))
    failed: list[BaseException] = []
    follower = CommitFollower("room", store, Recorder(), failed.append)  # type: ignore[arg-type]
    for i in range(3):
        db.commit({f"r{i}": "1"})
    import synced_store.server.follower as module

    limit, module.MAX_GAP_ROWS = module.MAX_GAP_ROWS, 2
    try:
        with pytest.raises(InstanceUnavailableError):
            await follower.read_gap(Tx(db))  # type: ignore[arg-type]
        store.watcher(None)
        await _settled(follower)
    finally:
        module.MAX_GAP_ROWS = limit
    assert isinstance(failed[0], InstanceUnavailableError)


async def test_reach_takes_in_what_a_client_from_another_process_has_seen() -> None:
    db = Db()
    store = Store(db, random.Random(1))
    fanout = Recorder()
    follower = CommitFollower("room", store, fanout, lambda exc: None)  # type: ignore[arg-type]
    for i in range(5):
        db.commit({f"r{i}": "1"})  # committed elsewhere; no news reached this process yet
    await follower.reach(4)
    assert follower.fanned == store.version == 5  # everything there was, in one read
    assert [v for v, _, _ in fanout.commits] == [5]
    # A cookie the database never had (a restored backup): it returns, nothing to take in.
    await asyncio.wait_for(follower.reach(9), 3)
    assert follower.fanned == 5


async def test_clients_whose_pushes_another_process_committed_are_named() -> None:
    """A client moved here while its push was in flight on another process: the follower
    names it, with its ``last_mutation_id``, so its session here can catch up."""
    db = Db()
    store = Store(db, random.Random(2))
    moved: list[dict[str, int]] = []
    follower = CommitFollower(
        "room",
        store,
        Recorder(),
        lambda exc: None,
        moved.append,  # type: ignore[arg-type]
    )
    v = db.commit({"r": "1"})
    db.clients["c1"] = (v, 4)
    store.watcher(v)
    await _settled(follower)
    assert moved == [{"c1": 4}]
    db.commit({"r": "2"})  # a commit without pushes names nobody
    store.watcher(db.version)
    await _settled(follower)
    assert moved == [{"c1": 4}]
