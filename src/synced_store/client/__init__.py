"""The Python client: an asyncio facade over the sans-I/O :class:`ClientEngine`."""

from .store import MutationResult, SyncedStoreClient, connect
from .transport import Connection, ConnectionLost, Connector, WebSocketConnector

__all__ = [
    "Connection",
    "ConnectionLost",
    "Connector",
    "MutationResult",
    "SyncedStoreClient",
    "WebSocketConnector",
    "connect",
]
