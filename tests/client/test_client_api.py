"""Client state, events and lifecycle against the real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appdefs import backend
from synced_store import ConnectionEndedError, define_backend_config, define_schema
from synced_store.client import connect
from synced_store.testing import TestHarness, create_test_harness


async def test_state_pending_listing_and_observer(harness: TestHarness) -> None:
    a, net = await harness.create_controlled_client("alice")
    assert a.state == "ready"
    assert a.is_online
    assert a.has_server_data
    assert a.is_bootstrapped
    seen: list[list[int]] = []
    a.on_pending_mutations_changed(lambda p: seen.append([m["id"] for m in p]))
    net.outbound.disable_auto_flush()
    await a.mutate.increment({"key": "c"})
    await a.mutate.increment({"key": "c"})
    assert [m["name"] for m in a.get_pending_mutations()] == ["increment", "increment"]
    await net.outbound.enable_auto_flush()
    await a.wait_for_sync(timeout=5)
    assert seen[0] == [1]
    assert seen[1] == [1, 2]
    assert seen[-1] == []


async def test_kicked_when_the_same_client_id_connects_again(
    harness: TestHarness, tmp_path: Path
) -> None:
    path = tmp_path / "same.sqlite3"
    first = await harness.create_client("alice", persist_path=path)
    await (await first.mutate.increment({"key": "k"})).confirmed
    ended: list[str] = []
    first.on_ended(ended.append)
    first.persistence.close()  # let a second process-like client open the same file
    first.persistence = None
    second = await harness.create_client("alice", persist_path=path)
    assert second.client_id == first.client_id
    with pytest.raises(ConnectionEndedError):
        await first.wait_until(lambda: False, timeout=5)
    assert first.end_reason == "kicked"
    assert ended == ["kicked"]
    assert first.state == "ended"
    with pytest.raises(ConnectionEndedError):
        await first.mutate.increment({"key": "k"})


async def test_schema_version_mismatch_clears_local_data(tmp_path: Path) -> None:
    other = define_backend_config(
        schema=define_schema(schema_version=9, tables=dict(backend.schema.tables)), mutators={}
    )
    async with await create_test_harness(backend, data_dir=tmp_path / "srv") as h:
        h.allowed_errors.append("schema_version_mismatch")
        calls: list[Any] = []
        store = await connect(
            h.url, other, instance_id="test", token="alice", persist_path=tmp_path / "c.sqlite3"
        )
        store.on_schema_version_mismatch(lambda: calls.append(1))
        with pytest.raises(ConnectionEndedError):
            await store.wait_for_server_data(5)
        assert store.end_reason == "schema_version_mismatch"
        assert calls == [1]
        await store.close()


async def test_unknown_names_fail_clearly(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    with pytest.raises(KeyError, match="unknown mutator"):
        await a.mutate.doesNotExist({})
    with pytest.raises(KeyError, match="unknown table"):
        await a.query(lambda ctx: ctx.table("nope").get("x"))
