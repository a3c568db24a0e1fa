"""The Streamable HTTP MCP endpoint, ``/mcp/{instance_id}``, mounted by ``create_app(...,
mcp=True)``.

Every request is authenticated like a sync connection: ``Authorization: Bearer <token>`` goes
through the app's ``authenticate`` (the same token or JWT a client connects with; 401 without a
valid one) and browser ``Origin`` headers through the same allow-list (403). Each tool call is
then authorized like opening the instance (``authorize(user, instance, claims)``, checked per
call, so a revoked member is refused at once) and runs on the server as that user:

- a mutator tool is one mutation through the instance's single writer, as that user: validated,
  committed (or refused and rolled back), synced to every connected client;
- an action tool runs like a client-called action (the same slots and timeout);
- read tools read committed rows (public ones, or the user's own private ones).

Refusals (invalid input, a permanent mutator error, refused authorization, the rate limit)
are tool errors with the message; nothing is changed. MCP sessions are bound to the token that
opened them. Resource subscriptions (``subscriptions/listen``) are fed by a synced-store client
of the instance connected to this app in process, with the caller's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from ..core.context import json_input
from ..errors import (
    PermissionDeniedError,
    QuotaExceededError,
    SyncedStoreError,
    UnknownNameError,
)
from ..schema import BackendConfig
from ..server.actions import ActionContext, ActionRunner
from ..server.auth import (
    Access,
    Authenticator,
    Authorizer,
    Identity,
    authenticate_token,
    authorize_instance,
)
from ..server.limits import ServerLimits
from ..server.rates import TokenBucket
from ..server.registry import InstanceRegistry
from ..server.web_security import websocket_origin_allowed
from ..storage.sqlite import validate_instance_id
from .calls import ReadFn
from .definitions import ToolSet
from .mcp_server import ChangeBus, McpBinding, build_mcp_server, parse_table_uri, watch_tables

__all__ = ["McpEndpoint"]

log = logging.getLogger("synced_store.mcp")
#: Where the endpoint leaves the caller in the request's ASGI scope.
CALLER_KEY = "synced_store.mcp_caller"
#: Users whose tool-call rate buckets are kept (least recently seen ones are forgotten).
MAX_RATED_USERS = 10_000


@dataclass(frozen=True)
class _Caller:
    identity: Identity
    instance_id: str
    token: str


class ServerTarget:
    """Tool calls on the server, as the authenticated user (see the module doc)."""

    def __init__(self, endpoint: McpEndpoint, caller: _Caller) -> None:
        self.endpoint = endpoint
        self.caller = caller

    @property
    def user_id(self) -> str:
        """The authenticated user."""
        return self.caller.identity.user_id

    async def mutate(self, name: str, args: Any) -> None:
        """One mutation through the instance's writer; returns once committed."""
        ep = self.endpoint
        ep.take_rate(self.user_id)
        mdef = ep.registry.config.schema.mutator(name)
        wire = json_input(mdef.input_encode, args, f"input for mutator {name!r}")
        source = {"type": "user", "user_id": self.user_id, "via": "mcp"}
        async with ep.registry.hold(self.caller.instance_id) as inst:
            await inst.mutate(self.user_id, name, wire, source)

    async def run_action(self, name: str, args: Any) -> Any:
        """The action, like a client's call (returns its output JSON or raises)."""
        ep = self.endpoint
        ep.take_rate(self.user_id)
        async with ep.registry.hold(self.caller.instance_id) as inst:
            return await ep.actions.run(inst, name, args, self.user_id, client=True)

    async def read(self, fn: ReadFn) -> Any:
        """``fn`` over the committed rows."""
        async with self.endpoint.registry.hold(self.caller.instance_id) as inst:
            ctx = ActionContext(inst, self.user_id, "mcp", None)
            try:
                return await fn(ctx)
            finally:
                await ctx.close()


class McpEndpoint:
    """The ASGI endpoint of ``/mcp/{instance_id}`` and its MCP session manager."""

    def __init__(
        self,
        backend: BackendConfig,
        tools: ToolSet,
        registry: InstanceRegistry,
        actions: ActionRunner,
        *,
        authenticate: Authenticator,
        authorize: Authorizer,
        limits: ServerLimits,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.tools = tools
        self.registry = registry
        self.actions = actions
        self.authenticate = authenticate
        self.authorize = authorize
        self.limits = limits
        self.allowed_origins = tuple(allowed_origins)
        #: The whole app (set by create_app): resource subscriptions connect to it in process.
        self.app: Any = None
        self._rates: OrderedDict[str, TokenBucket] = OrderedDict()
        self.server = build_mcp_server(
            tools,
            self._resolve,
            name="synced-store",
            instructions=(
                "Tools of one synced-store instance (the URL's last segment). A mutator tool "
                "commits one mutation as your user and every connected client sees it at once. "
                "A refused call returns an error message and changes nothing."
            ),
            feed=self._feed,
        )
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            max_request_body_size=limits.max_message_bytes,
            max_sessions=limits.max_connections,
        )

    def run(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The session manager's lifetime (entered in the app's lifespan)."""
        return self.manager.run()

    def take_rate(self, user_id: str) -> None:
        """Count one tool call against the user's mutation rate; raise past it."""
        now = asyncio.get_running_loop().time()
        bucket = self._rates.get(user_id)
        if bucket is None:
            bucket = self._rates[user_id] = TokenBucket(
                self.limits.mutations_per_second, self.limits.mutation_burst, now
            )
            if len(self._rates) > MAX_RATED_USERS:
                self._rates.popitem(last=False)
        else:
            self._rates.move_to_end(user_id)
        if bucket.take(1, now) > 0:
            raise QuotaExceededError(
                f"rate limit exceeded ({self.limits.mutations_per_second:g} calls/s); slow down"
            )

    # -- HTTP --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate the request, then hand it to the MCP session manager."""
        if not websocket_origin_allowed(scope, self.allowed_origins):
            await PlainTextResponse("origin not allowed", 403)(scope, receive, send)
            return
        instance_id = scope.get("path_params", {}).get("instance_id", "")
        try:
            validate_instance_id(instance_id)
        except SyncedStoreError as exc:
            await PlainTextResponse(str(exc), 404)(scope, receive, send)
            return
        token = _bearer(scope)
        identity = await authenticate_token(self.authenticate, token) if token else None
        if identity is not None and _expired(identity):
            identity = None
        if identity is None or token is None:
            response = PlainTextResponse(
                "authentication failed: send Authorization: Bearer <token>",
                401,
                headers={"WWW-Authenticate": 'Bearer realm="synced-store"'},
            )
            await response(scope, receive, send)
            return
        expires = int(identity.expires_at) if identity.expires_at is not None else None
        scope["user"] = AuthenticatedUser(
            AccessToken(
                token=token,
                client_id=identity.user_id,
                subject=identity.user_id,
                scopes=[],
                expires_at=expires,
            )
        )
        scope[CALLER_KEY] = _Caller(identity, instance_id, token)
        await self.manager.handle_request(scope, receive, send)

    # -- MCP ---------------------------------------------------------------------------------

    @staticmethod
    def _caller(ctx: ServerRequestContext[Any, Any]) -> _Caller:
        request = ctx.request
        caller = getattr(request, "scope", {}).get(CALLER_KEY)
        if not isinstance(caller, _Caller):  # only reachable through __call__
            raise PermissionDeniedError("not authenticated")
        return caller

    async def _refusal(self, caller: _Caller) -> SyncedStoreError | None:
        """Why ``caller`` may not use its instance now (None: it may)."""
        access = await authorize_instance(self.authorize, caller.identity, caller.instance_id)
        if access is Access.DENY:
            return PermissionDeniedError(
                f"{caller.identity.user_id} is not authorized to open {caller.instance_id}"
            )
        if access is Access.OPEN and not await self.registry.exists(caller.instance_id):
            return PermissionDeniedError(
                f"instance {caller.instance_id} does not exist (not authorized to create it)"
            )
        if self.registry.config.members_only:  # as the sync endpoint (server/members.py)
            from ..server.members import admit

            async with self.registry.hold(caller.instance_id) as inst:
                if not await admit(inst, caller.identity, access):
                    user = caller.identity.user_id
                    return PermissionDeniedError(f"{user} is not a member of {caller.instance_id}")
        return None

    async def _resolve(self, ctx: ServerRequestContext[Any, Any]) -> McpBinding:
        caller = self._caller(ctx)
        refusal = await self._refusal(caller)
        if refusal is not None:
            log.info("MCP call refused: %s", refusal)
            return McpBinding(caller.instance_id, None, refusal)
        return McpBinding(caller.instance_id, ServerTarget(self, caller))

    @contextlib.asynccontextmanager
    async def _feed(
        self, ctx: ServerRequestContext[Any, Any], uris: Sequence[str], bus: ChangeBus
    ) -> AsyncIterator[None]:
        """Publish changes of the tables in ``uris`` on ``bus``, from a client of the instance
        connected in process with the caller's token, while the listen stream is open."""
        from ..client.asgi_transport import AsgiConnector
        from ..client.store import connect

        caller = self._caller(ctx)
        tables: list[str] = []
        for uri in uris:
            parsed = parse_table_uri(uri)
            if (
                parsed is None
                or parsed[0] != caller.instance_id
                or parsed[1] not in self.tools.tables
            ):
                raise UnknownNameError(f"no such resource on this endpoint: {uri}")
            tables.append(parsed[1])
        refusal = await self._refusal(caller)
        if refusal is not None:
            raise refusal
        if self.app is None:
            raise SyncedStoreError("resource subscriptions are not available")
        connector = AsgiConnector(
            self.app, f"/sync/{caller.instance_id}", headers=[("host", "mcp.in-process")]
        )
        store = await connect(
            "ws://in-process",
            self.backend,
            instance_id=caller.instance_id,
            token=caller.token,
            user_id=caller.identity.user_id,
            connector=connector,
        )
        try:
            await store.wait_for_server_data(timeout=10)
            watch_tables(store, bus, caller.instance_id, tables)
            yield
        finally:
            await store.close()


def _expired(identity: Identity) -> bool:
    return identity.expires_at is not None and identity.expires_at <= time.time()


def _bearer(scope: Scope) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
    if len(values) != 1:
        return None
    value = values[0].decode("latin-1").strip()
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return str(token.strip())
