"""An MCP server (the official ``mcp`` SDK's low-level ``Server``) over a :class:`ToolSet`.

Both transports use it: ``synced-store mcp`` (stdio; the calls run on one synced-store client)
and the Streamable HTTP endpoint of ``create_app(..., mcp=True)`` (the calls run on the server
as the authenticated user). What differs is the :class:`McpBinding` a request is served with,
which the transport supplies through ``resolve(ctx)``.

- ``tools/list``: :meth:`ToolSet.mcp`. ``tools/call``: :meth:`ToolSet.call`; a refusal
  (invalid input, a permanent mutator error, refused authorization) is a tool result with
  ``isError`` and the message, so the model can read it and correct itself. An unknown tool
  is a protocol error.
- Resources: each exposed table, ``synced-store://{instance}/tables/{table}``, read as JSON
  (the first :data:`~synced_store.tools.reads.MAX_ROWS` rows). Subscriptions use the SDK's
  ``subscriptions/listen`` (protocol 2026-07-28): the transport feeds a :class:`ChangeBus` with
  ``ResourceUpdated`` events from the store's own subscriptions.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated, ServerEvent
from mcp_types import INVALID_PARAMS

from .. import __version__
from ..errors import SyncedStoreError
from .calls import ToolResult, ToolTarget
from .definitions import ToolSet
from .reads import MAX_ROWS

__all__ = [
    "ChangeBus",
    "McpBinding",
    "build_mcp_server",
    "parse_table_uri",
    "table_uri",
    "watch_tables",
]

log = logging.getLogger("synced_store.tools")
URI_SCHEME = "synced-store"


def table_uri(instance_id: str, table: str) -> str:
    """The resource URI of a table of an instance."""
    return f"{URI_SCHEME}://{instance_id}/tables/{table}"


def parse_table_uri(uri: str) -> tuple[str, str] | None:
    """``(instance_id, table)`` of a table resource URI, or None."""
    prefix = f"{URI_SCHEME}://"
    if not uri.startswith(prefix):
        return None
    instance, sep, table = uri[len(prefix) :].partition("/tables/")
    if not sep or not instance or not table or "/" in table:
        return None
    return instance, table


@dataclass
class McpBinding:
    """What one MCP request runs on: the instance and the target of its tool calls (None with
    ``refusal``: the message every call and read answers with, e.g. refused authorization)."""

    instance_id: str
    target: ToolTarget | None
    refusal: SyncedStoreError | None = None


#: ``resolve(ctx) -> McpBinding`` for the request being served.
Resolver = Callable[[ServerRequestContext[Any, Any]], Awaitable[McpBinding]]
#: ``feed(ctx, uris, bus)``: an async context manager that publishes updates of ``uris`` on
#: ``bus`` (the listen stream's own) while the stream is open; raise
#: :class:`SyncedStoreError` to refuse the stream.
Feeder = Callable[
    [ServerRequestContext[Any, Any], Sequence[str], "ChangeBus"],
    contextlib.AbstractAsyncContextManager[None],
]


class ChangeBus:
    """An in-process ``SubscriptionBus`` with a synchronous :meth:`publish_nowait`, so store
    subscription callbacks (plain functions) can publish."""

    def __init__(self) -> None:
        self._listeners: dict[object, Callable[[ServerEvent], None]] = {}

    def publish_nowait(self, event: ServerEvent) -> None:
        """Deliver ``event`` to every listener now."""
        for listener in list(self._listeners.values()):
            try:
                listener(event)
            except Exception:
                log.exception("MCP subscription listener raised")

    async def publish(self, event: ServerEvent) -> None:
        """Deliver ``event`` to every listener."""
        self.publish_nowait(event)
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register ``listener``; returns an idempotent unsubscribe."""
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    def updated(self, instance_id: str, table: str) -> None:
        """Publish that a table of an instance changed."""
        self.publish_nowait(ResourceUpdated(uri=table_uri(instance_id, table)))


def _call_result(result: ToolResult) -> mcp_types.CallToolResult:
    structured = result.output if result.ok and isinstance(result.output, dict) else None
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=result.text())],
        structured_content=structured,
        is_error=not result.ok,
    )


def build_mcp_server(
    tools: ToolSet,
    resolve: Resolver,
    *,
    name: str = "synced-store",
    instructions: str | None = None,
    bus: ChangeBus | None = None,
    feed: Feeder | None = None,
) -> Server[Any]:
    """The MCP server for ``tools``. ``subscriptions/listen`` on the table resources is served
    from ``bus`` (fed by the transport all the time), or with ``feed``, from a bus of each
    listen stream's own that ``feed`` fills while the stream is open."""
    descriptors = [mcp_types.Tool.model_validate(d) for d in tools.mcp()]
    tables = tools.tables

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=descriptors)

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        if tools.get(params.name) is None:
            raise MCPError(INVALID_PARAMS, f"unknown tool {params.name!r}")
        binding = await resolve(ctx)
        if binding.target is None:
            err = binding.refusal or SyncedStoreError("not available")
            return _call_result(ToolResult(False, error=str(err), kind=err.kind))
        result = await tools.call(binding.target, params.name, params.arguments or {})
        return _call_result(result)

    async def list_resources(
        ctx: ServerRequestContext[Any, Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListResourcesResult:
        binding = await resolve(ctx)
        return mcp_types.ListResourcesResult(
            resources=[
                mcp_types.Resource(
                    uri=table_uri(binding.instance_id, t),
                    name=t,
                    description=f"The rows of table {t!r} of instance {binding.instance_id!r} "
                    f"(JSON, at most {MAX_ROWS} rows).",
                    mime_type="application/json",
                )
                for t in tables
            ]
        )

    async def read_resource(
        ctx: ServerRequestContext[Any, Any], params: mcp_types.ReadResourceRequestParams
    ) -> mcp_types.ReadResourceResult:
        binding = await resolve(ctx)
        parsed = parse_table_uri(str(params.uri))
        if parsed is None or parsed[0] != binding.instance_id or parsed[1] not in tables:
            raise MCPError(INVALID_PARAMS, f"no such resource: {params.uri}")
        if binding.target is None:
            err = binding.refusal or SyncedStoreError("not available")
            raise MCPError(INVALID_PARAMS, str(err))
        result = await tools.call(binding.target, "scan", {"table": parsed[1], "limit": MAX_ROWS})
        if not result.ok:
            raise MCPError(INVALID_PARAMS, result.text())
        return mcp_types.ReadResourceResult(
            contents=[
                mcp_types.TextResourceContents(
                    uri=str(params.uri), mime_type="application/json", text=result.text()
                )
            ]
        )

    listen: Any = None
    if (bus is not None or feed is not None) and tables:
        shared = ListenHandler(bus) if bus is not None else None

        async def listen(
            ctx: ServerRequestContext[Any, Any], params: mcp_types.SubscriptionsListenRequestParams
        ) -> mcp_types.SubscriptionsListenResult:
            if feed is None:
                assert shared is not None
                return await shared(ctx, params)
            own = ChangeBus()
            uris = list(params.notifications.resource_subscriptions or ())
            async with contextlib.AsyncExitStack() as stack:
                if uris:
                    try:
                        await stack.enter_async_context(feed(ctx, uris, own))
                    except SyncedStoreError as exc:
                        raise MCPError(INVALID_PARAMS, str(exc)) from None
                return await ListenHandler(own)(ctx, params)

    return Server(
        name,
        version=__version__,
        instructions=instructions,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources if tables else None,
        on_read_resource=read_resource if tables else None,
        on_subscriptions_listen=listen,
    )


def watch_tables(
    store: Any, bus: ChangeBus, instance_id: str, tables: Sequence[str]
) -> Callable[[], None]:
    """Publish ``ResourceUpdated`` on ``bus`` whenever one of ``tables`` changes in ``store`` (a
    synced-store client; its own table subscriptions). Returns a function that stops it."""
    stops = []
    for table in dict.fromkeys(tables):
        first = True

        def changed(entries: Any, changes: Any, table: str = table) -> None:
            nonlocal first
            if first:  # the initial snapshot is not a change
                first = False
                return
            bus.updated(instance_id, table)

        stops.append(store.subscribe_to_table(table, changed))

    def stop() -> None:
        for fn in stops:
            fn()

    return stop
