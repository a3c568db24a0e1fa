"""``create_app``: the ASGI application serving the sync endpoint (and static pages)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..errors import SchemaError, SyncedStoreError
from ..schema import BackendConfig
from ..storage.base import StorageBackend
from ..storage.sqlite_backend import SqliteBackend
from .auth import Authenticator, Authorizer, dev_authenticate, open_authorize
from .endpoint import RawSendMiddleware, SyncEndpoint
from .limits import Retention, ServerLimits
from .registry import InstanceRegistry
from .web_security import DEFAULT_CSP, SecurityHeadersMiddleware, normalize_origins

__all__ = ["create_app"]

log = logging.getLogger("synced_store.server")
#: Seconds a data-dir probe of ``/healthz`` is reused.
PROBE_TTL = 1.0


def create_app(
    backend: BackendConfig,
    *,
    data_dir: str | Path = "./data",
    database: str | StorageBackend | None = None,
    authenticate: Authenticator | None = None,
    authorize: Authorizer | None = None,
    durability: str = "normal",
    routes: Sequence[BaseRoute] = (),
    action_options: dict[str, Any] | None = None,
    append_deltas: bool = True,
    limits: ServerLimits | None = None,
    retention: Retention | None = None,
    allowed_origins: Sequence[str] = (),
    content_security_policy: str | None = DEFAULT_CSP,
    mcp: Any = False,
) -> Starlette:
    """Build the ASGI app.

    Args:
        backend: the schema and handlers (``define_backend_config``).
        data_dir: one SQLite file per instance is created here (the embedded default).
        database: instead of ``data_dir``, a PostgreSQL URI (``postgresql://user@host/db``,
            needs the ``postgres`` extra and a schema made by ``synced-store db upgrade``) or
            any :class:`~synced_store.storage.base.StorageBackend`. Any number of processes
            may serve the same database (docs/operations.md).
        authenticate: ``token -> user_id | Identity | None`` (sync or async), for example
            :class:`~synced_store.server.jwt_auth.JwtAuthenticator`. The default treats the
            token as the user id: INSECURE, for development only (a warning is logged).
        authorize: ``(user_id, instance_id, claims) -> Access | bool`` (sync or async): who
            may open, and who may create, an instance. The default lets a token with an
            ``instances`` claim open only those, and everyone else open and create anything.
        durability: ``"normal"`` (survives a killed process) or ``"full"`` (also power loss).
        routes: extra Starlette routes (pages, static files) mounted after the sync routes.
        action_options: options of the action runner (``max_attempts``, ``timeout``, ...).
        append_deltas: send a growing string as an append delta (False: always full rows, the
            naive baseline of the streaming benchmark).
        limits: memory, connection, rate and quota bounds (:class:`ServerLimits`).
        retention: how long tombstones, jobs, clients and error reports are kept.
        allowed_origins: browser origins allowed to open sync connections besides the
            server's own and loopback (``"https://app.example.com"``; ``"*"``: any).
        content_security_policy: the CSP header of every page and file (None: no CSP; the
            other security headers are always sent).
        mcp: serve the app's tools over MCP (Streamable HTTP) at ``/mcp/{instance_id}``:
            True for the backend's ``expose`` list, or an ``expose`` dict, or a
            :class:`~synced_store.tools.ToolSet`. Needs the ``mcp`` extra. Calls are
            authenticated and authorized like sync connections (docs/ai.md).

    The sync endpoint is ``/sync/{instance_id}``; ``/healthz`` reports the process and every
    failed instance (HTTP 503 when the process cannot serve).
    """
    if authenticate is None:
        log.warning(
            "synced-store: INSECURE development authentication in use (the token is taken as "
            "the user id). Pass create_app(..., authenticate=...) in production."
        )
        authenticate = dev_authenticate
    allowed_origins = normalize_origins(allowed_origins)  # ValueError on a bad entry
    limits = limits or ServerLimits()
    storage = _storage(data_dir, database, durability)
    registry = InstanceRegistry(
        backend, storage, limits=limits, retention=retention, append_deltas=append_deltas
    )
    registry.authorize = authorize or open_authorize
    from .actions import ActionRunner

    actions = ActionRunner(registry, **(action_options or {}))
    endpoint = SyncEndpoint(
        registry,
        authenticate,
        actions,
        authorize=authorize,
        limits=limits,
        allowed_origins=allowed_origins,
    )

    mcp_endpoint = (
        _mcp_endpoint(
            backend,
            mcp,
            registry,
            actions,
            authenticate=authenticate,
            authorize=authorize or open_authorize,
            limits=limits,
            allowed_origins=allowed_origins,
        )
        if mcp is not False and mcp is not None
        else None
    )
    mcp_routes: list[BaseRoute] = []
    if mcp_endpoint is not None:
        mcp_routes.append(
            Route("/mcp/{instance_id}", mcp_endpoint, methods=["GET", "POST", "DELETE"])
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with registry:
            actions.start()
            try:
                if mcp_endpoint is None:
                    yield
                else:
                    async with mcp_endpoint.run():
                        yield
            finally:
                await actions.stop()

    probe = _StorageProbe(storage)

    async def healthz(request: Request) -> JSONResponse:
        data_dir_ok, data_dir_error = await probe.check()
        inst = registry.health() if registry.running else {}
        ok = registry.running and data_dir_ok
        failed = inst.get("failed", {})
        body = {
            "ok": ok,
            "status": "unavailable" if not ok else ("degraded" if failed else "ok"),
            "instances": inst.get("open", 0),
            "max_open_instances": inst.get("max_open", registry.max_open_instances),
            "connections": endpoint.connections,
            "max_connections": registry.max_connections,
            "failed_instances": failed,
            "data_dir": {"writable": data_dir_ok, "error": data_dir_error},
            "storage": {"where": storage.description, "ok": data_dir_ok, "error": data_dir_error},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    middleware = [
        Middleware(RawSendMiddleware),
        Middleware(SecurityHeadersMiddleware, csp=content_security_policy),
    ]
    app = Starlette(
        routes=[
            WebSocketRoute("/sync/{instance_id}", endpoint.handle),
            Route("/healthz", healthz),
            *mcp_routes,
            *routes,
        ],
        lifespan=lifespan,
        middleware=middleware,
    )
    app.state.registry = registry
    app.state.actions = actions
    app.state.endpoint = endpoint
    app.state.mcp = mcp_endpoint
    if mcp_endpoint is not None:
        mcp_endpoint.app = app
    return app


def _storage(
    data_dir: str | Path, database: str | StorageBackend | None, durability: str
) -> StorageBackend:
    """The backend ``create_app``'s arguments name: a database (URI or backend), else the
    SQLite data dir."""
    if database is None:
        return SqliteBackend(Path(data_dir), durability=durability)
    if not isinstance(database, str):
        return database
    try:
        from ..storage.postgres import PostgresBackend
    except ImportError as exc:
        raise SyncedStoreError(
            f"create_app(database=...) needs asyncpg ({exc}): pip install 'synced-store[postgres]'"
        ) from None
    return PostgresBackend(database)


def _mcp_endpoint(backend: BackendConfig, mcp: Any, *args: Any, **kwargs: Any) -> Any:
    """The MCP endpoint for ``create_app(..., mcp=...)`` (see its docstring)."""
    try:
        from ..tools.mcp_http import McpEndpoint
    except ImportError as exc:
        raise SyncedStoreError(
            f"create_app(mcp=...) needs the `mcp` package ({exc}): pip install 'synced-store[mcp]'"
        ) from None
    from ..tools import ToolSet, define_tools

    expose = None if mcp is True else mcp
    tools = mcp if isinstance(mcp, ToolSet) else define_tools(backend, expose)
    if not len(tools):
        raise SchemaError(
            "create_app(mcp=True): the backend exposes nothing; pass "
            "expose={'mutators': [...], 'tables': [...]} to define_backend_config"
        )
    return McpEndpoint(backend, tools, *args, **kwargs)


class _StorageProbe:
    """Can the storage take new data (``StorageBackend.check``: SQLite writes and removes a
    small file in the data dir, so a full disk or a read-only mount shows)? Asked at most
    once per ``PROBE_TTL`` seconds; concurrent requests share one probe."""

    def __init__(self, storage: StorageBackend) -> None:
        self.storage = storage
        self._at = -PROBE_TTL
        self._result: tuple[bool, str | None] = (True, None)
        self._lock = asyncio.Lock()

    async def check(self) -> tuple[bool, str | None]:
        """``(ok, why not)``: the cached result, or a new probe."""
        async with self._lock:
            if time.monotonic() - self._at >= PROBE_TTL:
                error = await self.storage.check()
                self._result = (error is None, error)
                self._at = time.monotonic()
        return self._result
