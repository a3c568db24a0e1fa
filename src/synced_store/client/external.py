"""``store.external_store(instance_id)``: a live, read-only view of another instance.

The view is a second, managed connection: a client of that instance with the parent's
backend, token and user, which never mutates. It syncs like any client (the same visibility:
public rows and the user's own private rows), so a query or subscription on it sees the other
instance's changes as they commit. The parent keeps one view per instance id and closes them
when it closes.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.context import ReadContext
from ..core.external import check_instance_id
from ..errors import ClientClosedError, ValidationError
from ..types import EntryKey
from .transport import Connector

if TYPE_CHECKING:
    from .store import SyncedStoreClient

__all__ = [
    "MAX_EXTERNAL_VIEWS",
    "ExternalStoreView",
    "close_views",
    "open_view",
    "view_client_id",
]

#: Most external views one store may hold open (each is a connection).
MAX_EXTERNAL_VIEWS = 16


class ExternalStoreView:
    """A live, read-only view of instance :attr:`instance_id` (see the module doc)."""

    def __init__(self, client: SyncedStoreClient, instance_id: str) -> None:
        self._client = client
        #: The instance this view shows.
        self.instance_id = instance_id

    @property
    def has_server_data(self) -> bool:
        """True once the view received the instance's rows from the server."""
        return self._client.has_server_data

    @property
    def connection_status(self) -> str:
        """The view's own connection status."""
        return str(self._client.connection_status)

    async def wait_for_server_data(self, timeout: float | None = None) -> None:
        """Wait for the instance's rows (the snapshot)."""
        await self._client.wait_for_server_data(timeout)

    async def query(self, fn: Callable[[ReadContext], Any]) -> Any:
        """Run a read-only query ``fn(ctx)`` against the view (a snapshot)."""
        return await self._client.query(fn)

    def subscribe(
        self, fn: Callable[[ReadContext], Any], callback: Callable[[Any], None]
    ) -> Callable[[], None]:
        """``callback(result)`` now and whenever ``fn``'s result changes; returns
        ``unsubscribe()``."""
        return self._client.subscribe(fn, callback)

    def subscribe_to_table(
        self,
        name: str,
        callback: Callable[[list[tuple[EntryKey, Any]], dict[str, list[str]]], None],
        *,
        private: bool = False,
    ) -> Callable[[], None]:
        """Like the store's ``subscribe_to_table``, on the other instance."""
        return self._client.subscribe_to_table(name, callback, private=private)

    async def close(self) -> None:
        """Close the view's connection (the parent forgets it)."""
        await self._client.close()


def view_client_id(parent_client_id: str, instance_id: str) -> str:
    """The view's client id: derived from the parent's, so a store that keeps its client id
    (``persist_path``) reuses one client of the other instance instead of adding one per run."""
    digest = hashlib.sha256(instance_id.encode()).hexdigest()[:12]
    return f"{parent_client_id}.x{digest}"


def _sibling(connector: Connector, instance_id: str) -> Connector:
    """A connector like ``connector`` for another instance of the same server."""
    for attr in ("url", "path"):
        where = getattr(connector, attr, None)
        if isinstance(where, str) and "/sync/" in where:
            other = copy.copy(connector)
            setattr(other, attr, where.rsplit("/sync/", 1)[0] + "/sync/" + instance_id)
            return other
    raise ValidationError(
        f"this store's connector ({type(connector).__name__}) cannot open another instance"
    )


async def open_view(parent: SyncedStoreClient, instance_id: str) -> ExternalStoreView:
    """The parent's view of ``instance_id``, opened on first use."""
    from .store import SyncedStoreClient

    check_instance_id(instance_id)
    views: dict[str, ExternalStoreView] = parent.__dict__.setdefault("_external_views", {})
    if parent._closed:
        raise ClientClosedError("client closed")
    view = views.get(instance_id)
    if view is not None and not view._client._closed:
        return view
    if len(views) >= MAX_EXTERNAL_VIEWS and instance_id not in views:
        raise ValidationError(f"at most {MAX_EXTERNAL_VIEWS} external stores per store")
    low, high = parent._reconnect
    client = SyncedStoreClient(
        parent.config,
        _sibling(parent.connector, instance_id),
        token=parent.token,
        user_id=parent.user_id,
        client_id=view_client_id(parent.client_id, instance_id),
        reconnect_min=low,
        reconnect_max=high,
    )
    client._start()
    view = views[instance_id] = ExternalStoreView(client, instance_id)
    return view


async def close_views(parent: SyncedStoreClient) -> None:
    """Close every view of ``parent`` (its ``close`` calls this)."""
    views: dict[str, ExternalStoreView] = parent.__dict__.pop("_external_views", {})
    for view in views.values():
        await view.close()
