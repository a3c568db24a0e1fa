"""``store.mutate.X(...)`` and ``store.action.X(...)``: attribute access that names a mutator
or an action, and what a mutation call returns."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import SyncedStoreClient

__all__ = ["ActionProxy", "MutateProxy", "MutationResult"]


class MutationResult:
    """What ``await store.mutate.X(...)`` returns: the mutation ``id`` and ``confirmed``.

    ``await result.confirmed`` returns once the server committed the mutation and this client
    rebased onto it; it raises :class:`MutationFailedError` if the server rejected it.
    """

    __slots__ = ("confirmed", "id", "name")

    def __init__(self, mutation_id: int, name: str, confirmed: asyncio.Future[None]) -> None:
        self.id = mutation_id
        self.name = name
        self.confirmed = confirmed

    def __repr__(self) -> str:
        return f"MutationResult(id={self.id}, name={self.name!r})"


class MutateProxy:
    """``store.mutate.<name>(...)``: runs mutator ``name`` (see ``SyncedStoreClient._mutate``)."""

    def __init__(self, client: SyncedStoreClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[MutationResult]]:
        if name.startswith("__"):
            raise AttributeError(name)
        client = self._client
        client.config.schema.mutator(name)  # unknown names fail here, clearly

        async def call(
            args: Any = None, /, *, pending_mutation_dedupe_key: str | None = None, **kwargs: Any
        ) -> MutationResult:
            return client._mutate(
                name, kwargs if args is None else args, pending_mutation_dedupe_key
            )

        return call


class ActionProxy:
    """``store.action.<name>(...)``: calls action ``name`` on the server."""

    def __init__(self, client: SyncedStoreClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("__"):
            raise AttributeError(name)
        client = self._client
        client.config.schema.action(name)

        async def call(args: Any = None, /, **kwargs: Any) -> Any:
            return await client._action(name, kwargs if args is None else args)

        return call
