"""A client closed with pending mutations reopens from its file and lands them exactly once."""

from __future__ import annotations

from pathlib import Path

from appdefs import get_counter
from synced_store.testing import TestHarness, has_inbound_type, wait_for


async def test_pending_mutations_survive_close_and_land_exactly_once(
    harness: TestHarness, tmp_path: Path
) -> None:
    path = tmp_path / "alice.sqlite3"
    alice, net = await harness.create_controlled_client("alice", persist_path=path)
    await (await alice.mutate.increment({"key": "p", "amount": 10})).confirmed
    net.outbound.disable_auto_flush()  # offline from here: nothing reaches the server
    for _ in range(5):
        await alice.mutate.increment({"key": "p"})
    assert await alice.query(lambda ctx: get_counter(ctx, "p")) == 15
    assert alice.pending_count == 5
    client_id = alice.client_id
    await alice.close()

    observer = await harness.create_client("bob")
    assert await observer.query(lambda ctx: get_counter(ctx, "p")) == 10

    again = await harness.create_client("alice", persist_path=path, wait=False)
    assert again.client_id == client_id
    assert again.pending_count == 5  # restored before any server contact
    assert await again.query(lambda ctx: get_counter(ctx, "p")) == 15
    await again.wait_for_sync(timeout=10)
    await wait_for(observer, lambda ctx: get_counter(ctx, "p"), lambda v: v == 15)
    # Re-opening once more must not push them again.
    await again.close()
    third = await harness.create_client("alice", persist_path=path)
    assert third.pending_count == 0
    await third.mutate.increment({"key": "p"})
    await third.wait_for_sync(timeout=10)
    await wait_for(observer, lambda ctx: get_counter(ctx, "p"), lambda v: v == 16)


async def test_a_push_sent_but_not_acknowledged_is_not_applied_twice(
    harness: TestHarness, tmp_path: Path
) -> None:
    """The push reaches the server; every reply is lost; the client restarts and re-pushes."""
    path = tmp_path / "c.sqlite3"
    alice, net = await harness.create_controlled_client("alice", persist_path=path)
    net.inbound.disable_auto_flush()
    res = await alice.mutate.increment({"key": "once", "amount": 3})
    await net.inbound.wait_for_held(has_inbound_type("push_response"))
    await alice.close()  # the replies never arrive
    again = await harness.create_client("alice", persist_path=path)
    await again.wait_for_sync(timeout=10)
    assert await again.query(lambda ctx: get_counter(ctx, "once")) == 3
    assert not res.confirmed.done() or res.confirmed.exception() is not None
