"""The Streamable HTTP endpoint's own rules: the same authentication (token or JWT) and
authorization as the sync endpoint, sessions bound to their token, the rate limit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from synced_store import SchemaError
from synced_store.server import create_app
from synced_store.server.auth import Access, dev_authenticate
from synced_store.server.jwt_auth import JwtAuthenticator, mint_token
from synced_store.server.limits import ServerLimits
from synced_store.testing import TestHarness, create_test_harness
from synced_store.tools import define_tools

from .mcp_clients import REPO, result_text
from .notes_app import backend, schema

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.e2e
SECRET = "s" * 40
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream"}


def url(h: TestHarness, instance: str = "pad") -> str:
    return f"http://127.0.0.1:{h.port}/mcp/{instance}"


async def call(h: TestHarness, token: str, name: str, args: dict[str, Any], **kw: Any) -> Any:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(url(h, **kw), http_client=http)) as client,
    ):
        return await client.call_tool(name, args)


async def test_requests_without_a_valid_token_are_refused(tmp_path: Path) -> None:
    async with (
        await create_test_harness(
            backend, data_dir=tmp_path, mcp=True, authenticate=dev_authenticate
        ) as h,
        httpx2.AsyncClient() as http,
    ):
        for headers in ({}, {"Authorization": "Basic x"}, {"Authorization": "Bearer a/b"}):
            r = await http.post(url(h), json=INIT, headers={**HEADERS, **headers})
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer realm="synced-store"'
        r = await http.post(
            f"http://127.0.0.1:{h.port}/mcp/..bad",
            json=INIT,
            headers={**HEADERS, "Authorization": "Bearer alice"},
        )
        assert r.status_code == 404
        r = await http.post(
            url(h),
            json=INIT,
            headers={**HEADERS, "Authorization": "Bearer alice", "Origin": "https://evil.io"},
        )
        assert r.status_code == 403


async def test_a_session_is_bound_to_its_token(tmp_path: Path) -> None:
    h = await create_test_harness(backend, data_dir=tmp_path, mcp=True)
    async with h, httpx2.AsyncClient() as http:
        r = await http.post(url(h), json=INIT, headers={**HEADERS, "Authorization": "Bearer alice"})
        assert r.status_code == 200
        session = r.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        common = {**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
        r = await http.post(url(h), json=ping, headers={**common, "Authorization": "Bearer bob"})
        assert r.status_code == 404  # another user cannot use alice's session
        r = await http.post(url(h), json=ping, headers={**common, "Authorization": "Bearer alice"})
        assert r.status_code == 200


async def test_clients_of_the_older_protocol_call_tools_too(tmp_path: Path) -> None:
    """A 2025-11-25 client (initialize handshake, one MCP session over several POSTs)."""
    h = await create_test_harness(backend, data_dir=tmp_path, mcp=True)
    async with (
        h,
        httpx2.AsyncClient(headers={"Authorization": "Bearer alice"}) as http,
        Client(streamable_http_client(url(h), http_client=http), mode="legacy") as client,
    ):
        assert client.protocol_version == "2025-11-25"
        res = await client.call_tool("addNote", {"id": "n1", "text": "old school"})
        assert not res.is_error, result_text(res)
        res = await client.call_tool("addNote", {"id": "n2", "text": ""})
        assert res.is_error
        got = await client.call_tool("get", {"table": "notes", "key": "n1"})
        assert got.structured_content["value"]["owner"] == "alice"


async def test_jwt_and_the_instances_claim(tmp_path: Path) -> None:
    async with await create_test_harness(
        backend, data_dir=tmp_path, mcp=True, authenticate=JwtAuthenticator(secret=SECRET)
    ) as h:
        token = mint_token(SECRET, "alice", instances=["pad"])
        res = await call(h, token, "addNote", {"id": "n1", "text": "signed"})
        assert not res.is_error, result_text(res)
        res = await call(h, token, "addNote", {"id": "n1", "text": "elsewhere"}, instance="other")
        assert res.is_error
        assert result_text(res) == (
            "Error (permission_denied): alice is not authorized to open other"
        )
        assert not (tmp_path / "other.sqlite3").exists()  # nothing was created
        expired = mint_token(SECRET, "alice", ttl=-10)
        async with httpx2.AsyncClient() as http:
            r = await http.post(
                url(h), json=INIT, headers={**HEADERS, "Authorization": f"Bearer {expired}"}
            )
            assert r.status_code == 401


async def test_open_access_does_not_create_instances(tmp_path: Path) -> None:
    def open_only(user_id: str, instance_id: str, claims: Any) -> Access:
        return Access.OPEN

    async with await create_test_harness(
        backend, data_dir=tmp_path, mcp=True, authorize=open_only
    ) as h:
        res = await call(h, "alice", "addNote", {"id": "n1", "text": "x"}, instance="fresh")
        assert res.is_error
        assert "does not exist (not authorized to create it)" in result_text(res)
        assert not (tmp_path / "fresh.sqlite3").exists()


async def test_tool_calls_are_rate_limited_per_user(tmp_path: Path) -> None:
    limits = ServerLimits(mutations_per_second=0.001, mutation_burst=2)
    h = await create_test_harness(backend, data_dir=tmp_path, mcp=True, limits=limits)
    async with (
        h,
        httpx2.AsyncClient(headers={"Authorization": "Bearer alice"}) as http,
        Client(streamable_http_client(url(h), http_client=http)) as client,
    ):
        for i in range(2):
            res = await client.call_tool("addNote", {"id": f"n{i}", "text": "x"})
            assert not res.is_error
        res = await client.call_tool("addNote", {"id": "n2", "text": "x"})
        assert res.is_error
        assert result_text(res).startswith("Error (quota_exceeded): rate limit exceeded")
        reads = await client.call_tool("scan", {"table": "notes"})
        assert [r["key"] for r in reads.structured_content["rows"]] == ["n0", "n1"]


def test_mcp_needs_something_exposed(tmp_path: Path) -> None:
    bare = define_tools(schema)
    with pytest.raises(SchemaError, match="exposes nothing"):
        create_app(backend, data_dir=tmp_path, mcp=bare)
    app = create_app(backend, data_dir=tmp_path, mcp={"mutators": ["addNote"]})
    assert app.state.mcp.tools.names == ["addNote"]
    assert create_app(backend, data_dir=tmp_path).state.mcp is None


async def test_members_only_refuses_a_non_member(tmp_path: Path) -> None:
    import dataclasses

    from synced_store.server.members import add_members

    members_only = dataclasses.replace(backend, members_only=True)
    async with await create_test_harness(members_only, data_dir=tmp_path, mcp=True) as h:
        res = await call(h, "owner", "addNote", {"id": "n1", "text": "mine"})
        assert not res.is_error, result_text(res)  # created the instance: its owner
        res = await call(h, "alice", "addNote", {"id": "n2", "text": "x"})
        assert res.is_error
        assert "alice is not a member of pad" in result_text(res)
        await add_members(h.app.state.registry, "pad", ["alice"])
        res = await call(h, "alice", "addNote", {"id": "n2", "text": "x"})
        assert not res.is_error, result_text(res)
