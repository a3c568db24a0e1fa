"""Every hostile input gets a clear error or close code and changes nothing committed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect

from appdefs import get_counter
from synced_store import KeyTooLargeError, PermissionDeniedError, ValidationError
from synced_store.protocol import PROTOCOL_VERSION
from synced_store.testing import TestHarness, wait_for


def hello(**over: Any) -> str:
    msg = {
        "type": "connect",
        "protocol_version": PROTOCOL_VERSION,
        "schema_version": 1,
        "client_id": "raw-client",
        "token": "mallory",
        "cookie": None,
        "last_mutation_id": 0,
    }
    msg.update(over)
    return json.dumps(msg)


async def frames_until_close(ws: Any, timeout: float = 10) -> tuple[list[dict[str, Any]], int]:
    """All frames received, and the close code."""
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            async for text in ws:
                got.append(json.loads(text))
    except websockets.ConnectionClosed:
        pass
    assert ws.close_code is not None, "connection should be closed"
    return got, ws.close_code


async def raw(h: TestHarness, instance: str = "test") -> Any:
    return await ws_connect(f"{h.url}/sync/{instance}")


async def until(ws: Any, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == kind:
                return msg


async def server_counter(h: TestHarness, key: str) -> int | None:
    c = await h.create_client("observer")
    return await c.query(lambda ctx: get_counter(ctx, key))


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ("this is not json", 4003),
        ("[1, 2, 3]", 4003),
        ('{"type": "push", "mutations": []}', 4003),  # not a connect
        (hello(protocol_version=999), 4002),
        (hello(schema_version=7), 4005),
        (hello(token=""), 4001),
        (hello(client_id=""), 4003),
        (hello(cookie="yesterday"), 4003),
    ],
)
async def test_bad_handshakes_get_close_codes(harness: TestHarness, first: str, code: int) -> None:
    ws = await raw(harness)
    await ws.send(first)
    frames, close_code = await frames_until_close(ws)
    assert close_code == code
    assert frames
    assert frames[-1]["type"] == "error"
    assert frames[-1]["message"]


async def test_bad_token_with_a_real_authenticator(tmp_path: Any) -> None:
    from appdefs import backend
    from synced_store.testing import create_test_harness

    async with await create_test_harness(
        backend, data_dir=tmp_path, authenticate=lambda t: "alice" if t == "s3cret" else None
    ) as h:
        ws = await raw(h)
        await ws.send(hello(token="guess"))
        _, code = await frames_until_close(ws)
        assert code == 4001


@pytest.mark.parametrize("instance", ["..", "a/../b", "-x", "x" * 200, "%2e%2e", "a b"])
async def test_hostile_instance_ids_are_refused(harness: TestHarness, instance: str) -> None:
    try:
        ws = await raw(harness, instance)
    except websockets.InvalidStatus:
        return  # refused at the HTTP layer (no route): also fine, nothing opened
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(hello())
    _, code = await frames_until_close(ws)
    assert code == 4004
    assert not any(p.name.startswith(".") for p in harness.data_dir.iterdir())
    assert all(
        p.suffix in (".sqlite3", ".sqlite3-wal", ".sqlite3-shm") for p in harness.data_dir.iterdir()
    )


async def test_malformed_frame_after_connect_closes_with_4003_and_changes_nothing(
    harness: TestHarness,
) -> None:
    ws = await raw(harness)
    await ws.send(hello())
    await until(ws, "connected")
    await ws.send(
        json.dumps(
            {
                "type": "push",
                "mutations": [{"id": 1, "name": "setValue", "args": {"key": "z", "value": 1}}],
            }
        )
    )
    await until(ws, "push_response")
    await ws.send('{"type": "push", "mutations": [{"id": "two"}]}')
    _frames, code = await frames_until_close(ws)
    assert code == 4003
    assert await server_counter(harness, "z") == 1


async def push_and_get_errors(
    harness: TestHarness, mutations: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Push raw mutations; returns the reported errors and the confirmed last_mutation_id."""
    ws = await raw(harness)
    await ws.send(hello())
    await until(ws, "connected")
    await ws.send(json.dumps({"type": "push", "mutations": mutations}))
    errors: list[dict[str, Any]] = []
    lmid = 0
    acked: int | None = None
    async with asyncio.timeout(10):  # pokes and the push_response may come in either order
        while acked is None or lmid < acked:
            msg = json.loads(await ws.recv())
            if msg["type"] == "poke":
                errors += msg.get("errors", [])
                lmid = msg.get("last_mutation_id", lmid)
            elif msg["type"] == "push_response":
                acked = msg["last_mutation_id"]
    await ws.close()
    return errors, lmid


async def test_unknown_mutator_invalid_input_and_oversize_are_permanent_errors(
    harness: TestHarness,
) -> None:
    muts = [
        {"id": 1, "name": "noSuchMutator", "args": {}},
        {"id": 2, "name": "setValue", "args": {"key": "a", "value": "not a number"}},
        {"id": 3, "name": "setBlob", "args": {"key": "k" * 300, "data": 1}},
        {"id": 4, "name": "setBlob", "args": {"key": "big", "data": "x" * (1024 * 1024 + 10)}},
        {"id": 5, "name": "setValue", "args": {"key": "ok", "value": 7}},
    ]
    errors, lmid = await push_and_get_errors(harness, muts)
    assert lmid == 5  # every failure still advanced last_mutation_id: no deadlock
    kinds = {e["id"]: e["kind"] for e in errors}
    assert kinds == {
        1: "unknown_name",
        2: "invalid_input",
        3: "key_too_large",
        4: "value_too_large",
    }
    assert all(e["message"] for e in errors)
    assert await server_counter(harness, "ok") == 7
    c = await harness.create_client("observer2")
    assert await c.query(lambda ctx: ctx.table("blobs").get("big")) is None


async def test_mutation_id_gap_is_refused_without_effects(harness: TestHarness) -> None:
    ws = await raw(harness)
    await ws.send(hello())
    await until(ws, "connected")
    await ws.send(
        json.dumps(
            {
                "type": "push",
                "mutations": [{"id": 5, "name": "setValue", "args": {"key": "gap", "value": 1}}],
            }
        )
    )
    err = await until(ws, "error")
    assert err["kind"] == "mutation_id_gap"
    resp = await until(ws, "push_response")
    assert resp["last_mutation_id"] == 0
    await ws.close()
    assert await server_counter(harness, "gap") is None


async def test_another_users_private_rows_never_reach_a_client(harness: TestHarness) -> None:
    alice = await harness.create_client("alice")
    await (await alice.mutate.setNote({"text": "alice's secret"})).confirmed
    # A raw client for mallory sees public rows but not alice's private row.
    ws = await raw(harness)
    await ws.send(hello(client_id="mallory-1"))
    await until(ws, "connected")
    poke = await until(ws, "poke")
    assert all(op.get("ns", "") in ("", "u:mallory") for op in poke["patch"])
    assert "secret" not in json.dumps(poke)
    await ws.close()
    # Through the client API, reading or writing it raises at once.
    bob = await harness.create_client("bob")
    with pytest.raises(PermissionDeniedError):
        await bob.query(lambda ctx: ctx.private_of_user("alice").table("notes").get("note"))
    with pytest.raises(PermissionDeniedError):
        await bob.mutate.setNote({"text": "overwrite", "user": "alice"})
    assert bob.pending_count == 0
    with pytest.raises(PermissionDeniedError):
        await bob.query(lambda ctx: ctx.server_only().table("counters").get("x"))
    mine = lambda ctx: ctx.private_of_user("alice").table("notes").get("note")  # noqa: E731
    assert await alice.query(mine) == {"text": "alice's secret"}


async def test_a_client_id_cannot_be_taken_over_by_another_user(harness: TestHarness) -> None:
    alice = await harness.create_client("alice")
    await (await alice.mutate.increment({"key": "c"})).confirmed
    ws = await raw(harness)
    await ws.send(hello(client_id=alice.client_id, token="mallory"))
    _, code = await frames_until_close(ws)
    assert code == 4003


async def test_client_side_validation_errors_are_clear(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    with pytest.raises(ValidationError, match="value"):
        await a.mutate.setValue({"key": "a", "value": "nope"})
    with pytest.raises(KeyTooLargeError):
        await a.mutate.setBlob({"key": "k" * 300, "data": 1})
    with pytest.raises(ValidationError):
        await a.mutate.setBlob({"key": "k", "data": object()})
    assert a.pending_count == 0


async def test_optimistic_value_and_server_verified_value(harness: TestHarness) -> None:
    a, net = await harness.create_controlled_client("alice")
    b = await harness.create_client("bob")
    net.outbound.disable_auto_flush()
    res = await a.mutate.markServer({"key": "v"})
    assert await a.query(lambda ctx: get_counter(ctx, "v")) == 1  # optimistic value
    await net.outbound.enable_auto_flush()
    await res.confirmed
    assert await a.query(lambda ctx: get_counter(ctx, "v")) == 2  # server-verified value
    await wait_for(b, lambda ctx: get_counter(ctx, "v"), lambda v: v == 2)


async def test_binary_frames_after_the_handshake_close_with_4003_logged_once(
    harness: TestHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """A binary, non-UTF-8 frame used to escape the read loop (1006, ~21 KB of traceback per
    frame on the event loop, an unrelated client stalled for seconds)."""
    caplog.set_level(logging.INFO, logger="synced_store")
    bob = await harness.create_client("bob")
    carol = await harness.create_client("carol")
    for i in range(20):
        ws = await raw(harness)
        await ws.send(hello(client_id=f"bin-{i}"))
        await until(ws, "connected")
        await ws.send(b"\xff\xfe\x00binary")
        frames, code = await frames_until_close(ws)
        assert code == 4003
        assert "UTF-8" in frames[-1]["message"]
    records = [r for r in caplog.records if r.name.startswith("synced_store")]
    assert not any(r.exc_info for r in records), "a client error must not log a traceback"
    assert sum("bad frame" in r.getMessage() for r in records) == 20  # once each, briefly
    started = asyncio.get_running_loop().time()
    await (await bob.mutate.setValue({"key": "after", "value": 1})).confirmed
    await wait_for(carol, lambda ctx: get_counter(ctx, "after"), lambda v: v == 1)
    assert asyncio.get_running_loop().time() - started < 2.0


@pytest.mark.parametrize("instance", ["abc%0A", "abc%0a", "abc%0D", "abc%00", "abc%20"])
async def test_instance_ids_with_a_trailing_newline_or_control_are_refused(
    harness: TestHarness, instance: str
) -> None:
    try:
        ws = await raw(harness, instance)
    except websockets.InvalidStatus:
        return
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(hello())
    _, code = await frames_until_close(ws)
    assert code == 4004
    assert [p.name for p in harness.data_dir.iterdir() if not p.name.startswith("test")] == []


async def test_a_connected_client_id_cannot_be_taken_over_before_it_pushes(
    harness: TestHarness,
) -> None:
    """Bound to its user at the first connect, not at the first push: the owner is not kicked
    and keeps syncing."""
    alice = await raw(harness)
    await alice.send(hello(client_id="alices-id", token="alice"))
    await until(alice, "connected")
    mallory = await raw(harness)
    await mallory.send(hello(client_id="alices-id", token="mallory"))
    frames, code = await frames_until_close(mallory)
    assert code == 4003
    assert "another user" in frames[-1]["message"]
    await alice.send(
        json.dumps(
            {
                "type": "push",
                "mutations": [{"id": 1, "name": "setValue", "args": {"key": "a", "value": 3}}],
            }
        )
    )
    resp = await until(alice, "push_response")
    assert resp["last_mutation_id"] == 1
    await alice.close()
    assert await server_counter(harness, "a") == 3
