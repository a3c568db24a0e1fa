"""Contract: the action outbox — a job exists exactly when the transaction that enqueued it
committed; claims, at-least-once re-queueing of abandoned jobs, outcomes, retries by hand,
and retention of finished jobs."""

from __future__ import annotations

import pytest

from synced_store.storage.base import DEFAULT_JOB_LEASE, InstanceStore, StorageBackend, WriterTx
from synced_store.storage.records import JobStateError, JobStatus

from .helpers import DAY, in_tx, key

T0 = 1_000_000.0


async def _enqueue(
    store: InstanceStore, *names: str, user: str = "u", now: float = T0
) -> list[int]:
    async def add(tx: WriterTx) -> list[int]:
        return [await tx.add_job(n, {"n": n}, user, now) for n in names]

    ids: list[int] = await in_tx(store, add)
    return ids


async def _statuses(storage: StorageBackend) -> dict[str, str]:
    reader = await storage.inspect("room")
    try:
        return {j.name: j.status for j in await reader.jobs()}
    finally:
        await reader.close()


async def test_a_job_commits_and_rolls_back_with_its_mutation(
    storage: StorageBackend, store: InstanceStore
) -> None:
    tx = await store.begin()
    await tx.write(key("m"), "", b"1", 1)
    await tx.add_job("lost", {}, "u", T0)
    await tx.rollback()
    tx = await store.begin()
    await tx.write(key("m"), "", b"1", 1)
    await tx.savepoint()
    await tx.add_job("undone", {}, "u", T0)  # its mutation failed: the savepoint goes
    await tx.rollback_savepoint()
    jid = await tx.add_job("kept", {"x": [1, "y"]}, "u", T0)
    await tx.commit(1)
    assert await _statuses(storage) == {"kept": "pending"}
    assert await store.next_due() == 0.0
    claimed = await in_tx(store, lambda tx: tx.claim_jobs(T0, 10))
    assert claimed == [
        {"id": jid, "name": "kept", "input": {"x": [1, "y"]}, "user_id": "u", "attempts": 1}
    ]


async def test_claims_take_due_jobs_oldest_first(store: InstanceStore) -> None:
    a, b, c = await _enqueue(store, "a", "b", "c")
    await _enqueue(store, "d", user="busy")
    await in_tx(store, lambda tx: tx.finish_job(b, JobStatus.PENDING, now=T0, next_run_at=T0 + 60))
    assert await in_tx(store, lambda tx: tx.unfinished_jobs("u")) == (3, 4)
    first = await in_tx(store, lambda tx: tx.claim_jobs(T0, 1, ("busy",)))
    assert [j["id"] for j in first] == [a]
    rest = await in_tx(store, lambda tx: tx.claim_jobs(T0, 10, ("busy",)))
    assert [j["id"] for j in rest] == [c]  # b is not due, d's user is at its limit
    assert await in_tx(store, lambda tx: tx.claim_jobs(T0, 10, ("busy",))) == []
    assert await store.next_due() == 0.0  # d
    assert await in_tx(store, lambda tx: tx.next_due()) == 0.0
    later = await in_tx(store, lambda tx: tx.claim_jobs(T0 + 60, 10))
    assert sorted(j["name"] for j in later) == ["b", "d"]
    assert await store.next_due() is None
    assert await in_tx(store, lambda tx: tx.unfinished_jobs("u")) == (3, 4)  # running counts


async def test_outcomes(storage: StorageBackend, store: InstanceStore) -> None:
    done, failed, again = await _enqueue(store, "done", "failed", "again")
    await in_tx(store, lambda tx: tx.claim_jobs(T0, 10))

    async def finish(tx: WriterTx) -> None:
        await tx.finish_job(done, JobStatus.DONE, now=T0 + 1, output={"ok": True})
        await tx.finish_job(failed, "failed", now=T0 + 1, error="boom")
        await tx.finish_job(again, JobStatus.PENDING, now=T0 + 1, error="later", next_run_at=T0 + 9)

    await in_tx(store, finish)
    reader = await storage.inspect("room")
    try:
        jobs = {j.name: j for j in await reader.jobs()}
        assert [j.name for j in await reader.jobs(JobStatus.FAILED)] == ["failed"]
    finally:
        await reader.close()
    assert (jobs["done"].status, jobs["done"].output, jobs["done"].attempts) == (
        "done",
        {"ok": True},
        1,
    )
    assert (jobs["failed"].status, jobs["failed"].last_error) == ("failed", "boom")
    assert (jobs["again"].status, jobs["again"].next_run_at) == ("pending", T0 + 9)
    assert jobs["again"].updated_at == T0 + 1
    assert jobs["again"].created_at == T0
    assert await store.next_due() == T0 + 9
    assert await in_tx(store, lambda tx: tx.unfinished_jobs("u")) == (1, 1)


async def test_abandoned_jobs_run_again_at_least_once(
    storage: StorageBackend, store: InstanceStore
) -> None:
    (jid,) = await _enqueue(store, "work")
    [job] = await in_tx(store, lambda tx: tx.claim_jobs(T0, 10, lease=30.0))
    assert job["attempts"] == 1
    await store.close()  # the process running it dies
    store = await storage.open_instance("room")
    try:
        # Once its lease is over, whoever opens the instance makes it pending again.
        after = T0 + 30.0 + DEFAULT_JOB_LEASE + 1
        assert await in_tx(store, lambda tx: tx.requeue_running(after)) == 1
        [job] = await in_tx(store, lambda tx: tx.claim_jobs(after, 10))
        assert (job["id"], job["attempts"]) == (jid, 2)
    finally:
        await store.close()


async def test_retries_by_hand(store: InstanceStore) -> None:
    failed, other_failed, pending, running, done = await _enqueue(store, "f1", "f2", "p", "r", "d")
    await in_tx(store, lambda tx: tx.claim_jobs(T0, 10))

    async def finish(tx: WriterTx) -> None:
        for jid in (failed, other_failed):
            await tx.finish_job(jid, JobStatus.FAILED, now=T0, error="x")
        await tx.finish_job(pending, JobStatus.PENDING, now=T0, next_run_at=T0 + 3600)
        await tx.finish_job(done, JobStatus.DONE, now=T0)

    await in_tx(store, finish)
    for jid, status in ((running, JobStatus.RUNNING), (done, JobStatus.DONE), (999, None)):
        with pytest.raises(JobStateError) as refused:
            await in_tx(store, lambda tx, jid=jid: tx.retry_jobs([pending, jid], now=T0))
        assert (refused.value.job_id, refused.value.status) == (jid, status)
    assert await store.next_due() == T0 + 3600  # the refused retries changed nothing
    assert await in_tx(store, lambda tx: tx.retry_jobs([pending], now=T0 + 5)) == [pending]
    assert await store.next_due() == 0.0
    assert await in_tx(store, lambda tx: tx.retry_jobs(None, now=T0 + 5)) == [failed, other_failed]
    assert await in_tx(store, lambda tx: tx.retry_jobs(None, now=T0 + 5)) == []
    claimed = await in_tx(store, lambda tx: tx.claim_jobs(T0 + 5, 10))
    assert sorted(j["id"] for j in claimed) == [failed, other_failed, pending]
    assert {j["attempts"] for j in claimed} == {1}  # a fresh attempt budget


async def test_finished_jobs_are_forgotten_after_their_retention(
    storage: StorageBackend, store: InstanceStore
) -> None:
    jobs = await _enqueue(store, "old-done", "new-done", "old-failed", "pending")
    await in_tx(store, lambda tx: tx.claim_jobs(T0, 10))

    async def finish(tx: WriterTx) -> None:
        await tx.finish_job(jobs[0], JobStatus.DONE, now=T0)
        await tx.finish_job(jobs[1], JobStatus.DONE, now=T0 + 2 * DAY)
        await tx.finish_job(jobs[2], JobStatus.FAILED, now=T0)
        await tx.finish_job(jobs[3], JobStatus.PENDING, now=T0)

    await in_tx(store, finish)
    res = await in_tx(
        store,
        lambda tx: tx.compact(
            T0 + 2 * DAY + 1, tombstones=DAY, done_jobs=DAY, failed_jobs=DAY, clients=90 * DAY
        ),
    )
    assert (res.done_jobs, res.failed_jobs) == (1, 1)
    assert await _statuses(storage) == {"new-done": "done", "pending": "pending"}
