"""The official MCP SDK's client, over stdio (``synced-store mcp`` as a subprocess) or over
Streamable HTTP (``create_app(..., mcp=True)``), acting as a user on one instance."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from synced_store.testing import TestHarness

REPO = Path(__file__).resolve().parents[2]
TRANSPORTS = ["stdio", "http"]


def result_text(result: Any) -> str:
    """The text of a tool result's first content block."""
    return str(result.content[0].text)


@contextlib.asynccontextmanager
async def mcp_client(
    h: TestHarness, transport: str, app_spec: str, *, user: str, instance: str
) -> AsyncIterator[Client]:
    """An MCP client session for ``user`` on ``instance`` of the harness's server."""
    if transport == "stdio":
        params = StdioServerParameters(
            command=sys.executable,
            args=[
                "-m",
                "synced_store.cli",
                "mcp",
                app_spec,
                "--url",
                h.url,
                "--instance",
                instance,
                "--token",
                user,
                "--timeout",
                "10",
            ],
            cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        async with Client(params, read_timeout_seconds=30) as client:
            yield client
        return
    url = f"http://127.0.0.1:{h.port}/mcp/{instance}"
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {user}"}) as http,
        Client(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client,
    ):
        yield client
