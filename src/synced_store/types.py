"""Types shared by every layer (the contract between them): keys, JSON values, states.

The state enums are ``StrEnum``s: each member *is* its string (``ConnectionStatus.CONNECTED ==
"connected"``), so public attributes, callbacks, the wire and the databases keep plain strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple, TypeAlias

__all__ = ["ConnectionStatus", "EntryKey", "JSONValue", "JobStatus", "RowKey"]

#: A JSON value: dict / list / str / int / float / bool / None (nested).
JSONValue: TypeAlias = Any


class ConnectionStatus(StrEnum):
    """A client's ``connection_status`` (the browser shell's ``store.status`` adds ``ended``)."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"


class JobStatus(StrEnum):
    """The state of an action job in an instance's outbox (the ``jobs.status`` column)."""

    PENDING = "pending"  # queued, or waiting out its retry backoff (``next_run_at``)
    RUNNING = "running"  # claimed by the runner; back to pending if the server restarts
    DONE = "done"  # the action returned; its output is kept until retention forgets it
    FAILED = "failed"  # out of attempts; ``synced-store actions retry`` re-queues it


class EntryKey(NamedTuple):
    """The position of a row in scan order: ``(sort_key, item_key)``."""

    sort_key: str
    item_key: str


class RowKey(NamedTuple):
    """The identity of a row: visibility namespace, table and item key.

    ``ns`` is ``""`` for public rows, ``"u:<user_id>"`` for a user's private rows and ``"s"``
    for server-only rows (which never leave the server).
    """

    ns: str
    table: str
    item: str
