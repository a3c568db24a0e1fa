"""``synced-store mcp``: an MCP server on stdio that is a synced-store client of one instance.

An agent host (Claude Desktop, an IDE, the ``mcp`` SDK's client) starts it as a subprocess and
speaks MCP over its stdin/stdout. Each tool call is run by this process's client: a mutator
tool is pushed like any client's mutation (it syncs to every other client) and the call returns
once the server committed it, or with the server's refusal as a tool error.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import click

from .loading import CliError, load_backend

__all__ = ["mcp", "serve_stdio"]

log = logging.getLogger("synced_store.mcp")


async def serve_stdio(
    backend: Any,
    *,
    url: str,
    instance_id: str,
    token: str | None,
    user_id: str | None = None,
    timeout: float = 30.0,
    persist_path: str | None = None,
) -> None:
    """Serve MCP on this process's stdin/stdout until the client closes it."""
    from mcp.server.stdio import stdio_server

    from ..client import connect
    from ..tools import ClientTarget, define_tools
    from ..tools.mcp_server import ChangeBus, McpBinding, build_mcp_server, watch_tables

    tools = define_tools(backend)
    store = await connect(
        url,
        backend,
        instance_id=instance_id,
        token=token,
        user_id=user_id,
        persist_path=persist_path,
    )
    try:
        bus = ChangeBus()
        watch_tables(store, bus, instance_id, tools.tables)
        binding = McpBinding(instance_id, ClientTarget(store, timeout=timeout))

        async def resolve(ctx: Any) -> McpBinding:
            return binding

        server = build_mcp_server(
            tools,
            resolve,
            name=f"synced-store {instance_id}",
            instructions=_instructions(instance_id),
            bus=bus,
        )
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await store.close()


def _instructions(instance_id: str) -> str:
    return (
        f"Tools of the synced-store instance {instance_id!r}. A mutator tool commits one "
        "mutation as your user; every connected client sees it at once. Read tools (get, scan, "
        "search) show the rows you may see. A refused call returns an error message and "
        "changes nothing."
    )


@click.command("mcp")
@click.argument("app_spec", metavar="MODULE:ATTR")
@click.option("--url", required=True, help="The server's base URL (ws://host:port).")
@click.option("--instance", "instance_id", required=True, help="The instance to act on.")
@click.option(
    "--token",
    envvar="SYNCED_STORE_TOKEN",
    default=None,
    help="The token (or JWT) to connect with; also read from $SYNCED_STORE_TOKEN.",
)
@click.option(
    "--user",
    "user_id",
    default=None,
    help="The user id the token stands for, for optimistic runs (default: the token, as in "
    "development auth).",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the server (first sync, a confirmation, an action).",
)
@click.option(
    "--persist",
    "persist_path",
    default=None,
    help="A local SQLite file: calls made while the server is unreachable wait there.",
)
def mcp(
    app_spec: str,
    url: str,
    instance_id: str,
    token: str | None,
    user_id: str | None,
    timeout: float,
    persist_path: str | None,
) -> None:
    """Serve an app's exposed mutators, actions and tables as MCP tools over stdio.

    MODULE:ATTR is the app's backend (define_backend_config); its `expose` list says which
    mutators, actions and tables agents may use. The process is a client of INSTANCE on the
    server at URL, acting as the token's user: its mutations sync to every client.

    \b
    Example:
        synced-store mcp examples.todo.app:backend --url ws://127.0.0.1:8000 \\
            --instance my-list --token alice
    """
    try:
        import mcp as _mcp  # noqa: F401
    except ImportError:
        raise CliError(
            "the MCP server needs the `mcp` package: pip install 'synced-store[mcp]'"
        ) from None
    from ..errors import SyncedStoreError
    from ..tools import define_tools

    backend = load_backend(app_spec)
    try:
        tools = define_tools(backend)
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None
    if not len(tools):
        raise CliError(
            f"{app_spec} exposes nothing: pass expose={{'mutators': [...], 'tables': [...]}} "
            "to define_backend_config"
        )
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # stdout carries MCP
    asyncio.run(
        serve_stdio(
            backend,
            url=url,
            instance_id=instance_id,
            token=token,
            user_id=user_id,
            timeout=timeout,
            persist_path=persist_path,
        )
    )
