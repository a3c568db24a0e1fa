"""What the client engine tells the I/O layer around it (``ClientEngine.events_received``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..types import RowKey

__all__ = [
    "ActionCompleted",
    "Confirmed",
    "EngineEvent",
    "MutationRejected",
    "ServerError",
    "SessionStarted",
    "SnapshotUpdated",
    "StartedOver",
]


@dataclass(frozen=True, slots=True)
class Confirmed:
    """Mutations up to ``last_mutation_id`` are confirmed (applied and rebased)."""

    mutation_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MutationRejected:
    """The server rejected a mutation permanently; its effects were rolled back."""

    mutation_id: int
    name: str
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """The server sent an ``error`` frame."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The server accepted the connection (``connected``): pending mutations are being pushed."""

    user_id: str
    client_id: str
    last_mutation_id: int


@dataclass(frozen=True, slots=True)
class StartedOver:
    """The server knows fewer of this client's mutations than it confirmed (a restored backup):
    the engine continues as a new client; pending mutations were renumbered from 1."""

    old_client_id: str
    client_id: str
    #: ``{old id: new id}`` of every pending mutation.
    renumbered: dict[int, int]


@dataclass(frozen=True, slots=True)
class SnapshotUpdated:
    """A server update was applied: the rows of the snapshot it changed (for persistence)."""

    reset: bool
    #: ``(key, (sort key, value))``, or ``(key, None)`` for a deleted row.
    rows: list[tuple[RowKey, tuple[str, Any] | None]]
    cookie: int | None
    last_mutation_id: int


@dataclass(frozen=True, slots=True)
class ActionCompleted:
    """The result of an action call (``ClientEngine.call_action``)."""

    request_id: str
    ok: bool
    output: Any = None
    kind: str | None = None
    error: str | None = None


EngineEvent = (
    Confirmed
    | MutationRejected
    | ServerError
    | SessionStarted
    | StartedOver
    | SnapshotUpdated
    | ActionCompleted
)
