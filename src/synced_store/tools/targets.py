"""A synced-store client as a tool target: what the stdio MCP server runs its calls on."""

from __future__ import annotations

import asyncio
from typing import Any

from ..client.store import SyncedStoreClient
from ..errors import ConnectionEndedError, OfflineError
from .calls import ReadFn

__all__ = ["ClientTarget"]


class ClientTarget:
    """Runs tool calls through a connected client: a mutator tool is ``store.mutate.X(...)``
    awaited until the server confirms it (or refuses it: its optimistic effects are rolled
    back), an action tool is ``store.action.X(...)``, reads query the client's view.

    ``timeout`` bounds the wait for the server (the first sync, a confirmation).
    """

    def __init__(self, store: SyncedStoreClient, *, timeout: float = 30.0) -> None:
        self.store = store
        self.timeout = timeout

    @property
    def user_id(self) -> str:
        """The client's user."""
        return self.store.user_id

    async def ready(self) -> None:
        """Wait for the client's first server data; raise if the server refused the session."""
        store = self.store
        try:
            await store.wait_for_server_data(self.timeout)
        except ConnectionEndedError as exc:
            raise ConnectionEndedError(
                exc.reason,
                "the server ended this client's session; with auth_failed the token is invalid "
                "or not authorized for this instance",
            ) from None
        except TimeoutError:
            raise OfflineError(
                f"no data from the server within {self.timeout:g}s (is it running?)"
            ) from None

    async def mutate(self, name: str, args: Any) -> None:
        """Apply optimistically, push, and wait until the server committed it."""
        await self.ready()
        res = await getattr(self.store.mutate, name)(args)
        try:
            await asyncio.wait_for(asyncio.shield(res.confirmed), self.timeout)
        except TimeoutError:
            raise TimeoutError(
                f"mutation {name} not confirmed within {self.timeout:g}s; it stays queued and "
                "may still commit"
            ) from None

    async def run_action(self, name: str, args: Any) -> Any:
        """Call the action on the server (pending mutations are flushed first)."""
        await self.ready()
        return await asyncio.wait_for(getattr(self.store.action, name)(args), self.timeout)

    async def read(self, fn: ReadFn) -> Any:
        """Query the client's view (server data plus its own pending mutations)."""
        await self.ready()
        return await self.store.query(fn)
