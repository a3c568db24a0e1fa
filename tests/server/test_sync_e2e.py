"""Two real clients over a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from appdefs import get_counter
from synced_store import MutationFailedError
from synced_store.testing import TestHarness, wait_for, wait_for_all_clients


def counter(key: str):
    return lambda ctx: get_counter(ctx, key)


async def test_optimistic_value_is_visible_before_the_server_answers(harness: TestHarness) -> None:
    alice, net = await harness.create_controlled_client("alice")
    net.outbound.disable_auto_flush()
    res = await alice.mutate.increment({"key": "c"})
    assert await alice.query(counter("c")) == 1
    assert alice.pending_count == 1
    held = await net.outbound.wait_for_held()
    assert [m["type"] for m in held] == ["push"]
    assert await alice.query(counter("c")) == 1  # still only optimistic: nothing reached the server
    await net.outbound.enable_auto_flush()
    await asyncio.wait_for(res.confirmed, 10)
    assert alice.pending_count == 0
    assert await alice.query(counter("c")) == 1


async def test_two_clients_times_100_concurrent_increments_end_at_200(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    b = await harness.create_client("bob")

    async def hammer(store) -> list:
        return [await store.mutate.increment({"key": "c"}) for _ in range(100)]

    ra, rb = await asyncio.gather(hammer(a), hammer(b))
    await asyncio.wait_for(asyncio.gather(*(r.confirmed for r in ra + rb)), 20)
    await wait_for_all_clients([a, b], counter("c"), lambda v: v == 200)
    assert await a.query(counter("c")) == await b.query(counter("c")) == 200


async def test_server_only_failure_is_reported_and_does_not_block(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    b = await harness.create_client("bob")
    failures: list[MutationFailedError] = []
    a.on_failed_mutation(failures.append)
    await (await a.mutate.setValue({"key": "x", "value": 5})).confirmed
    bad = await a.mutate.serverFails({"key": "x"})
    assert await a.query(counter("x")) == -1  # optimistic
    after = await a.mutate.increment({"key": "x"})
    with pytest.raises(MutationFailedError, match="rejected by the server") as info:
        await asyncio.wait_for(bad.confirmed, 10)
    assert info.value.mutation_id == bad.id
    await asyncio.wait_for(after.confirmed, 10)
    assert [f.mutation_id for f in failures] == [bad.id]
    assert await a.query(counter("x")) == 6
    await wait_for(b, counter("x"), lambda v: v == 6)


async def test_client_side_throw_rejects_immediately_and_queues_nothing(
    harness: TestHarness,
) -> None:
    a = await harness.create_client("alice")
    with pytest.raises(ValueError, match="bad call"):
        await a.mutate.alwaysFails({"key": "x"})
    assert a.pending_count == 0
