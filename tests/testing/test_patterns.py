"""The documented test patterns (spec §7.6), each as a test of ours, over the real server."""

from __future__ import annotations

import asyncio

from appdefs import get_counter
from synced_store.testing import (
    TestHarness,
    has_inbound_type,
    wait_for,
    wait_for_all_clients,
    wait_for_key_deleted,
    wait_for_key_exists,
    wait_for_value,
)


def counter(key: str):
    return lambda ctx: get_counter(ctx, key)


async def test_poke_before_push_response(harness: TestHarness) -> None:
    a, net = await harness.create_controlled_client("alice")
    net.inbound.disable_auto_flush()
    res = await a.mutate.increment({"key": "r"})
    await net.inbound.wait_for_held(has_inbound_type("push_response"))
    await net.inbound.wait_for_held(has_inbound_type("poke"))
    assert await net.inbound.flush_matching(has_inbound_type("poke"))
    await net.inbound.flush_all()
    await asyncio.wait_for(res.confirmed, 5)
    assert a.pending_count == 0
    assert await a.query(counter("r")) == 1


async def test_push_response_before_poke(harness: TestHarness) -> None:
    a, net = await harness.create_controlled_client("alice")
    net.inbound.disable_auto_flush()
    res = await a.mutate.increment({"key": "r"})
    await net.inbound.wait_for_held(has_inbound_type("poke"))
    await net.inbound.wait_for_held(has_inbound_type("push_response"))
    assert await net.inbound.flush_matching(has_inbound_type("push_response"))
    assert not res.confirmed.done()  # acknowledged, but its data has not arrived yet
    assert a.pending_count == 1
    assert await a.query(counter("r")) == 1
    await net.inbound.flush_all()
    await asyncio.wait_for(res.confirmed, 5)
    assert a.pending_count == 0
    assert await a.query(counter("r")) == 1


async def test_concurrent_increments_from_two_clients_converge_to_2(harness: TestHarness) -> None:
    a, net_a = await harness.create_controlled_client("alice")
    b, net_b = await harness.create_controlled_client("bob")
    net_a.outbound.disable_auto_flush()
    net_b.outbound.disable_auto_flush()
    ra = await a.mutate.increment({"key": "n"})
    rb = await b.mutate.increment({"key": "n"})
    assert await a.query(counter("n")) == await b.query(counter("n")) == 1
    await net_a.outbound.enable_auto_flush()
    await net_b.outbound.enable_auto_flush()
    await asyncio.wait_for(asyncio.gather(ra.confirmed, rb.confirmed), 5)
    await wait_for_all_clients([a, b], counter("n"), lambda v: v == 2)


async def test_lost_push_response_is_retried_after_reconnect_without_duplicating(
    harness: TestHarness,
) -> None:
    a, net = await harness.create_controlled_client("alice")
    net.inbound.disable_auto_flush()
    res = await a.mutate.increment({"key": "once", "amount": 5})
    await net.inbound.wait_for_held(has_inbound_type("push_response"))
    net.inbound.remove(lambda m: True)  # the replies are lost ...
    await net.simulate_disconnect(block_reconnect=False)  # ... and the socket breaks
    await net.inbound.enable_auto_flush()
    await asyncio.wait_for(res.confirmed, 10)
    assert await a.query(counter("once")) == 5
    b = await harness.create_client("bob")
    assert await b.query(counter("once")) == 5


async def test_offline_mutations_and_online_peer_converge_after_reconnect(
    harness: TestHarness,
) -> None:
    a, net = await harness.create_controlled_client("alice")
    b = await harness.create_client("bob")
    await net.simulate_disconnect(block_reconnect=True)
    await a.wait_until(lambda: not a.is_online, timeout=5)
    offline = [await a.mutate.increment({"key": "m"}) for _ in range(3)]
    await a.mutate.addItem({"id": "from-offline", "text": "typed offline"})
    await (await b.mutate.increment({"key": "m", "amount": 10})).confirmed
    await (await b.mutate.addItem({"id": "from-online", "text": "typed online"})).confirmed
    assert await a.query(counter("m")) == 3  # offline view: own writes only
    net.simulate_reconnect()
    await asyncio.wait_for(asyncio.gather(*(r.confirmed for r in offline)), 10)
    await wait_for_all_clients([a, b], counter("m"), lambda v: v == 13)
    items = lambda ctx: ctx.table("items").keys()  # noqa: E731
    ka, kb = await wait_for_all_clients([a, b], items, lambda ks: len(ks) == 2)
    assert ka == kb
    assert [k.item_key for k in ka] == ["from-online", "from-offline"]  # server order


async def test_cross_client_sequence_gated_by_confirmed(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    b = await harness.create_client("bob")
    await (await a.mutate.setValue({"key": "g", "value": 41})).confirmed
    await wait_for_value(b, table="counters", key="g", value={"value": 41})
    await (await b.mutate.increment({"key": "g"})).confirmed
    await wait_for_value(a, table="counters", key="g", value={"value": 42})
    await (await a.mutate.deleteKey({"key": "g"})).confirmed
    await wait_for_key_deleted(b, table="counters", key="g")
    await b.mutate.setValue({"key": "h", "value": 1})
    assert await wait_for_key_exists(a, table="counters", key="h") == {"value": 1}


async def test_subscription_fires_only_when_its_rows_change(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    b = await harness.create_client("bob")
    seen: list[int | None] = []
    a.subscribe(counter("watched"), seen.append)
    await wait_for(a, counter("watched"), lambda v: v is None)
    for i in range(5):
        await (await b.mutate.setValue({"key": f"other{i}", "value": i})).confirmed
    await (await b.mutate.setValue({"key": "watched", "value": 7})).confirmed
    await wait_for(a, counter("watched"), lambda v: v == 7)
    await wait_for(a, counter("other4"), lambda v: v == 4)
    assert seen == [None, 7]


async def test_subscribe_to_table_reports_added_modified_removed(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    calls: list[dict[str, list[str]]] = []
    a.subscribe_to_table("counters", lambda entries, changes: calls.append(changes))
    await wait_for(a, lambda ctx: None, lambda _: True)  # let the first call run
    await a.mutate.setValue({"key": "x", "value": 1})
    await a.mutate.setValue({"key": "x", "value": 2})
    await a.mutate.deleteKey({"key": "x"})
    await a.wait_for_sync(timeout=5)
    assert calls[0] == {"added": [], "modified": [], "removed": []}
    assert {"added": ["x"], "modified": [], "removed": []} in calls
    assert {"added": [], "modified": ["x"], "removed": []} in calls
    assert calls[-1] == {"added": [], "modified": [], "removed": ["x"]}


async def test_no_errors_logged_in_race_offline_and_replay_scenarios(harness: TestHarness) -> None:
    a, net = await harness.create_controlled_client("alice")
    b = await harness.create_client("bob")
    await net.simulate_disconnect(block_reconnect=True)
    for _ in range(3):
        await a.mutate.sumInto({"prefix": "s", "target": "s-total"})
        await b.mutate.increment({"key": "s1"})
    net.simulate_reconnect()
    await a.wait_for_sync(timeout=10)
    await b.wait_for_sync(timeout=10)
    await wait_for_all_clients([a, b], counter("s-total"), lambda v: v == 3)
    assert harness.error_logs == []


async def test_dedupe_key_sends_only_first_and_latest_of_an_offline_queue(
    harness: TestHarness,
) -> None:
    a, net = await harness.create_controlled_client("alice")
    b = await harness.create_client("bob")
    await net.simulate_disconnect(block_reconnect=True)
    await a.wait_until(lambda: not a.is_online, timeout=5)
    for v in range(1, 11):  # a cursor position dragged while offline
        await a.mutate.setValue({"key": "cursor", "value": v}, pending_mutation_dedupe_key="cur")
    await a.mutate.increment({"key": "clicks"})
    net.outbound.disable_auto_flush()
    net.simulate_reconnect()
    await net.outbound.wait_for_held(has_inbound_type("connect"))
    await net.outbound.flush_one()  # let the handshake through, hold the push
    held = await net.outbound.wait_for_held(has_inbound_type("push"))
    names = [m["name"] for m in held[0]["mutations"]]
    assert names == ["setValue", *["$skip"] * 8, "setValue", "increment"]
    await net.outbound.enable_auto_flush()
    await a.wait_for_sync(timeout=10)
    await wait_for(b, counter("cursor"), lambda v: v == 10)
    assert await b.query(counter("clicks")) == 1
