"""``create_app``: the ASGI application serving the sync endpoint (and static pages)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from ..schema import BackendConfig
from .auth import Authenticator, dev_authenticate
from .endpoint import SyncEndpoint
from .registry import InstanceRegistry

__all__ = ["create_app"]

log = logging.getLogger("synced_store.server")


def create_app(
    backend: BackendConfig,
    *,
    data_dir: str | Path = "./data",
    authenticate: Authenticator | None = None,
    durability: str = "normal",
    routes: Sequence[BaseRoute] = (),
    action_options: dict[str, Any] | None = None,
    append_deltas: bool = True,
) -> Starlette:
    """Build the ASGI app.

    Args:
        backend: the schema and handlers (``define_backend_config``).
        data_dir: one SQLite file per instance is created here.
        authenticate: ``token -> user_id | None`` (sync or async). The default treats the token
            as the user id: INSECURE, for development only (a warning is logged).
        durability: ``"normal"`` (survives a killed process) or ``"full"`` (also power loss).
        routes: extra Starlette routes (pages, static files) mounted after the sync routes.
        action_options: options of the action runner (``max_attempts``, ``timeout``, ...).
        append_deltas: send a growing string as an append delta (False: always full rows, the
            naive baseline of the streaming benchmark).

    The sync endpoint is ``/sync/{instance_id}``; ``/healthz`` answers ``{"ok": true}``.
    """
    if authenticate is None:
        log.warning(
            "synced-store: INSECURE development authentication in use (the token is taken as "
            "the user id). Pass create_app(..., authenticate=...) in production."
        )
        authenticate = dev_authenticate
    registry = InstanceRegistry(backend, Path(data_dir), durability=durability)
    from .actions import ActionRunner

    actions = ActionRunner(registry, **(action_options or {}))
    endpoint = SyncEndpoint(registry, authenticate, actions, append_deltas=append_deltas)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with registry:
            actions.start()
            try:
                yield
            finally:
                await actions.stop()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "instances": len(registry.instances)})

    app = Starlette(
        routes=[
            WebSocketRoute("/sync/{instance_id}", endpoint.handle),
            Route("/healthz", healthz),
            *routes,
        ],
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.actions = actions
    return app
