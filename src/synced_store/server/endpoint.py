"""The WebSocket sync endpoint: handshake, then pumps frames between the socket and a session.

Every frame is untrusted: failures map to an error frame or a close code here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import ProtocolError, SyncedStoreError, ValidationError
from ..protocol.codec import decode_client_message
from ..protocol.codes import END_REASONS, CloseCode, ErrorKind
from ..protocol.version import MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION
from ..storage.sqlite import validate_instance_id
from .auth import Authenticator, authenticate_token
from .registry import InstanceRegistry
from .session import Session

__all__ = ["SyncEndpoint"]

log = logging.getLogger("synced_store.server")
HANDSHAKE_TIMEOUT = 15.0
#: Client-called actions running at once on one connection; more are refused at once.
MAX_ACTIONS_PER_CONNECTION = 16


class SyncEndpoint:
    """Serves ``/sync/{instance_id}``."""

    def __init__(
        self,
        registry: InstanceRegistry,
        authenticate: Authenticator,
        actions: Any = None,
        *,
        append_deltas: bool = True,
    ) -> None:
        self.append_deltas = append_deltas
        self.registry = registry
        self.authenticate = authenticate
        self.actions = actions

    async def handle(self, ws: WebSocket) -> None:
        """The Starlette WebSocket endpoint."""
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect):
            await self._serve(ws)

    async def _close(self, ws: WebSocket, code: int, reason: str) -> None:
        try:
            await ws.send_json(
                {
                    "type": "error",
                    "kind": END_REASONS.get(CloseCode(code), CloseCode(code).name.lower()),
                    "message": reason,
                }
            )
            await ws.close(code, reason[:120])
        except Exception:
            log.debug("close failed", exc_info=True)

    async def _serve(self, ws: WebSocket) -> None:
        instance_id = ws.path_params.get("instance_id", "")
        try:
            validate_instance_id(instance_id)
        except ValidationError as exc:
            await self._close(ws, CloseCode.BAD_INSTANCE, str(exc))
            return
        try:
            text = await asyncio.wait_for(_receive_text(ws), HANDSHAKE_TIMEOUT)
            hello = decode_client_message(text)
        except TimeoutError:
            await self._close(ws, CloseCode.BAD_MESSAGE, "no connect message in time")
            return
        except ProtocolError as exc:
            await self._close(ws, CloseCode.BAD_MESSAGE, str(exc))
            return
        if hello["type"] != "connect":
            await self._close(ws, CloseCode.BAD_MESSAGE, "the first message must be 'connect'")
            return
        pv = hello["protocol_version"]
        if not MIN_PROTOCOL_VERSION <= pv <= MAX_PROTOCOL_VERSION:
            await self._close(
                ws,
                CloseCode.VERSION_MISMATCH,
                f"protocol version {pv} not supported "
                f"({MIN_PROTOCOL_VERSION}..{MAX_PROTOCOL_VERSION}); reload",
            )
            return
        identity = await authenticate_token(self.authenticate, hello.get("token"))
        if identity is None:
            await self._close(ws, CloseCode.AUTH_FAILED, "authentication failed")
            return
        user_id = identity.user_id
        schema = self.registry.config.schema
        schema_version = schema.schema_version
        if hello["schema_version"] != schema_version and not schema.can_migrate_from(
            hello["schema_version"]
        ):
            await self._close(
                ws,
                CloseCode.SCHEMA_MISMATCH,
                f"schema version {hello['schema_version']} != server's "
                f"{schema_version}; clear local data and reload",
            )
            return
        try:
            instance = await self.registry.get(instance_id)
        except SyncedStoreError as exc:
            log.error("cannot open instance %s: %s", instance_id, exc)
            await self._close(ws, CloseCode.INTERNAL_ERROR, "instance unavailable")
            return
        client_id = hello["client_id"]
        owner = instance.client_owner(client_id)
        if owner is not None and owner[0] != user_id:
            await self._close(ws, CloseCode.BAD_MESSAGE, "client id belongs to another user")
            return
        server_lmid = owner[1] if owner else 0
        closed = asyncio.Event()

        async def close(code: int, reason: str) -> None:
            closed.set()
            await self._close(ws, code, reason)

        session = Session(
            send=ws.send_text,
            close=close,
            store=instance.store,
            user_id=user_id,
            client_id=client_id,
            cookie=hello.get("cookie"),
            known_lmid=min(int(hello.get("last_mutation_id") or 0), server_lmid),
            append_deltas=self.append_deltas,
            schema_version=hello["schema_version"],
        )
        await instance.attach(session)
        try:
            await ws.send_json(
                {
                    "type": "connected",
                    "client_id": client_id,
                    "user_id": user_id,
                    "last_mutation_id": server_lmid,
                    "instance_id": instance_id,
                    "schema_version": schema_version,
                }
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    sender = tg.create_task(session.run_sender())
                    try:
                        await self._read_loop(ws, instance, session, tg)
                    finally:
                        session.closed = True
                        sender.cancel()
            except* WebSocketDisconnect:
                pass  # the client went away while we were sending: normal
        finally:
            instance.detach(session)

    async def _run_action(self, instance: Any, session: Session, msg: dict[str, Any]) -> None:
        session.actions_in_flight += 1
        try:
            await self.actions.call_from_client(instance, session, msg)
        finally:
            session.actions_in_flight -= 1

    async def _read_loop(
        self, ws: WebSocket, instance: Any, session: Session, tg: asyncio.TaskGroup
    ) -> None:
        while not session.closed:
            try:
                text = await _receive_text(ws)
            except WebSocketDisconnect:
                return
            if session.closed:
                return
            try:
                msg = decode_client_message(text)
            except ProtocolError as exc:
                await session.kick(CloseCode.BAD_MESSAGE, str(exc))
                return
            t = msg["type"]
            if t == "push":
                instance.submit_push(session, msg["mutations"])
                await instance.wait_for_room()
            elif t == "action":
                if session.actions_in_flight >= MAX_ACTIONS_PER_CONNECTION:
                    session.send_message(
                        {
                            "type": "action_result",
                            "request_id": msg["request_id"],
                            "ok": False,
                            "kind": ErrorKind.ACTION_FAILED,
                            "error": f"more than {MAX_ACTIONS_PER_CONNECTION} actions in flight "
                            "on this connection",
                        }
                    )
                elif self.actions is None:
                    session.send_message(
                        {
                            "type": "action_result",
                            "request_id": msg["request_id"],
                            "ok": False,
                            "kind": ErrorKind.UNKNOWN_NAME,
                            "error": "this server runs no actions",
                        }
                    )
                else:
                    tg.create_task(self._run_action(instance, session, msg))
            elif t == "pull":
                session.request_pull()
            else:
                await session.kick(CloseCode.BAD_MESSAGE, f"unexpected message {t!r}")
                return


async def _receive_text(ws: WebSocket) -> str:
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        data = message.get("bytes") or b""
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise ProtocolError("binary frame is not UTF-8 JSON") from None
    return str(text)
