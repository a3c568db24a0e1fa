"""Who may open, and who may create, an instance — against a real server on 127.0.0.1.

``create_app(..., authorize=...)`` decides per (user, instance, claims); the default honours
the token's ``instances`` claim. A refusal closes with 4001 (``auth_failed``) before anything
is opened, and no instance file is created.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.client import connect
from synced_store.client.store import SyncedStoreClient
from synced_store.server.auth import Access
from synced_store.server.jwt_auth import JwtAuthenticator, mint_token
from synced_store.testing import TestHarness, create_test_harness

TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))
SECRET = b"authorization-test-secret-" + b"z" * 38


class Who(BaseModel):
    user: str


class Key(BaseModel):
    key: str


schema = define_schema(
    schema_version=1, tables={"who": table(Who)}, mutators={"whoami": {"input": Key}}
)


async def whoami(ctx: Any, input: Key) -> None:
    await ctx.table("who").set(input.key, {"user": ctx.user_id})


backend = define_backend_config(schema=schema, mutators={"whoami": whoami})

Start = Callable[..., Awaitable[TestHarness]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a real server with JWT auth and the given ``create_app`` options."""
    started: list[TestHarness] = []

    async def start(**app_options: Any) -> TestHarness:
        app_options.setdefault("authenticate", JwtAuthenticator(secret=SECRET))
        h = await create_test_harness(
            backend, data_dir=tmp_path / f"data{len(started)}", **app_options
        )
        h.allowed_errors.append("session ended by the server (auth_failed)")
        started.append(h)
        return h

    yield start
    for h in started:
        await h.dispose()


async def open_client(h: TestHarness, token: str, instance_id: str) -> SyncedStoreClient:
    client = await connect(
        h.url, backend, instance_id=instance_id, token=token, reconnect_delay=(0.005, 0.05)
    )
    h.clients.append(client)
    return client


async def outcome(h: TestHarness, user: str, instance_id: str, **claims: Any) -> str:
    """Connect ``user`` to ``instance_id``: ``"connected"`` or the client's end reason."""
    client = await open_client(h, mint_token(SECRET, user, claims=claims), instance_id)
    await client.wait_until(
        lambda: client.end_reason is not None or client.has_server_data, timeout=TIMEOUT
    )
    return client.end_reason or "connected"


def has_file(h: TestHarness, instance_id: str) -> bool:
    return any(Path(h.data_dir).glob(f"{instance_id}.sqlite3*"))


# -- the default: the token's `instances` claim -------------------------------------------------


async def test_the_instances_claim_opens_exact_ids_and_prefixes(start_server: Start) -> None:
    h = await start_server()
    instances = ["room1", "team-42-*"]
    assert await outcome(h, "alice", "room1", instances=instances) == "connected"
    assert await outcome(h, "alice", "team-42-chat", instances=instances) == "connected"
    assert has_file(h, "room1")
    assert has_file(h, "team-42-chat")
    for other in ("room2", "room10", "room", "team-43-chat", "team-4"):
        assert await outcome(h, "alice", other, instances=instances) == "auth_failed", other
        assert not has_file(h, other), other
        assert other not in h.app.state.registry.instances


async def test_an_empty_instances_claim_opens_nothing(start_server: Start) -> None:
    h = await start_server()
    assert await outcome(h, "alice", "room1", instances=[]) == "auth_failed"
    assert not has_file(h, "room1")


async def test_an_instance_outside_the_claim_is_refused_even_if_it_exists(
    start_server: Start,
) -> None:
    h = await start_server()
    assert await outcome(h, "admin", "room1") == "connected"  # no claim: anything
    assert await outcome(h, "alice", "room1", instances=["room2"]) == "auth_failed"


async def test_a_malformed_instances_claim_is_refused_not_unrestricted(
    start_server: Start,
) -> None:
    h = await start_server()
    for bad in ("room1", None, {"room1": True}, [1], ["a*b"]):
        assert await outcome(h, "alice", "room1", instances=bad) == "auth_failed", bad
    assert not has_file(h, "room1")


# -- a custom authorize ----------------------------------------------------------------------


async def test_access_open_opens_existing_instances_but_creates_none(start_server: Start) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def authorize(user_id: str, instance_id: str, claims: Mapping[str, Any]) -> Access:
        calls.append((user_id, instance_id, dict(claims)))
        return Access.CREATE if claims.get("role") == "admin" else Access.OPEN

    h = await start_server(authorize=authorize)
    assert await outcome(h, "boss", "existing", role="admin") == "connected"
    assert has_file(h, "existing")
    assert await outcome(h, "alice", "existing") == "connected"
    assert await outcome(h, "alice", "brand-new") == "auth_failed"
    assert not has_file(h, "brand-new")
    assert "brand-new" not in h.app.state.registry.instances
    assert [(u, i) for u, i, _ in calls] == [
        ("boss", "existing"),
        ("alice", "existing"),
        ("alice", "brand-new"),
    ]
    assert calls[0][2]["role"] == "admin"  # authorize sees the token's claims
    assert calls[0][2]["sub"] == "boss"


async def test_access_open_works_once_the_instance_was_closed(start_server: Start) -> None:
    """OPEN looks at the file, not only at the instances open in memory."""
    h = await start_server(authorize=lambda u, i, c: Access.OPEN if u != "boss" else Access.CREATE)
    assert await outcome(h, "boss", "kept") == "connected"
    await h.restart_server()
    assert "kept" not in h.app.state.registry.instances
    assert await outcome(h, "alice", "kept") == "connected"


@pytest.mark.parametrize(
    ("name", "result"),
    [("False", False), ("None", None), ("DENY", Access.DENY), ("garbage", "yes")],
)
async def test_authorize_refusals(start_server: Start, name: str, result: Any) -> None:
    h = await start_server(authorize=lambda u, i, c: result)
    if name == "garbage":
        h.allowed_errors.append("authorize() returned 'yes'")
    assert await outcome(h, "alice", "room1") == "auth_failed"
    assert not has_file(h, "room1")


async def test_an_authorize_that_raises_refuses(start_server: Start) -> None:
    def authorize(user_id: str, instance_id: str, claims: Mapping[str, Any]) -> bool:
        raise RuntimeError("membership service down")

    h = await start_server(authorize=authorize)
    h.allowed_errors.append("authorize() raised")
    assert await outcome(h, "alice", "room1") == "auth_failed"
    assert not has_file(h, "room1")
    assert any("authorize() raised" in m for m in h.error_logs)


async def test_an_async_authorize_is_awaited(start_server: Start) -> None:
    members = {"room1": {"alice"}}

    async def authorize(user_id: str, instance_id: str, claims: Mapping[str, Any]) -> bool:
        await asyncio.sleep(0)  # e.g. a database lookup
        return user_id in members.get(instance_id, set())

    h = await start_server(authorize=authorize)
    assert await outcome(h, "alice", "room1") == "connected"
    assert await outcome(h, "bob", "room1") == "auth_failed"
    assert await outcome(h, "alice", "room2") == "auth_failed"
    assert not has_file(h, "room2")


async def test_true_creates(start_server: Start) -> None:
    h = await start_server(authorize=lambda u, i, c: True)
    assert await outcome(h, "alice", "fresh") == "connected"
    assert has_file(h, "fresh")
