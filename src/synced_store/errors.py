"""Exceptions raised by synced-store.

Every exception derives from :class:`SyncedStoreError`, so ``except SyncedStoreError`` catches
anything the library raises on purpose. The tree, with the layer that raises each class::

    SyncedStoreError
    ├── SchemaError                 definition time: define_schema / define_backend_config
    ├── ValidationError (ValueError) core: an input, output or row value is invalid
    │   ├── KeyTooLargeError        core: table name + item key over 256 bytes
    │   └── ValueTooLargeError      core: a value's JSON encoding is longer than 1 MiB
    ├── UnknownNameError (KeyError) core: unknown table, mutator or action
    ├── PermissionDeniedError       core: another user's private rows, server-only rows on a client
    ├── MutatorError                core: a mutator misbehaved (awaited real I/O on a client pass)
    ├── ProtocolError               protocol: a malformed or out-of-order wire message
    ├── MutationFailedError         client: the server rejected a mutation permanently
    ├── ActionError                 client/server: an action raised or returned an invalid output
    ├── ClientClosedError           client: the store was closed by *this* side
    ├── ConnectionEndedError        client: the server ended the session for good
    ├── OfflineError                client: the operation needs the server; the client is offline
    └── StorageError                storage: the database failed (``transient``: retry may help)
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "ClientClosedError",
    "ConnectionEndedError",
    "KeyTooLargeError",
    "MutationFailedError",
    "MutatorError",
    "OfflineError",
    "PermissionDeniedError",
    "ProtocolError",
    "SchemaError",
    "StorageError",
    "SyncedStoreError",
    "UnknownNameError",
    "ValidationError",
    "ValueTooLargeError",
]


class SyncedStoreError(Exception):
    """Root of every exception synced-store raises on purpose."""

    #: Machine-readable kind, used on the wire for errors reported to clients.
    kind: str = "error"


class SchemaError(SyncedStoreError):
    """A schema or backend config is inconsistent (raised at definition time)."""

    kind = "schema_error"


class ValidationError(SyncedStoreError, ValueError):
    """An input, output or row value does not match its declared model or JSON rules."""

    kind = "invalid_input"


class KeyTooLargeError(ValidationError):
    """Table name plus item key (or a sort key) is longer than 256 bytes in UTF-8."""

    kind = "key_too_large"


class ValueTooLargeError(ValidationError):
    """A value's compact JSON encoding is longer than 1 MiB (1,048,576 bytes)."""

    kind = "value_too_large"


class UnknownNameError(SyncedStoreError, KeyError):
    """A table, mutator or action name is not declared in the schema."""

    kind = "unknown_name"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PermissionDeniedError(SyncedStoreError):
    """The caller may not touch these rows (another user's private rows, server-only rows)."""

    kind = "permission_denied"


class MutatorError(SyncedStoreError):
    """A mutator broke a rule of the engine (for example awaited real I/O on a client pass)."""

    kind = "mutator_error"


class ProtocolError(SyncedStoreError):
    """A wire message is malformed, too large, or not allowed in the current state."""

    kind = "bad_message"


class MutationFailedError(SyncedStoreError):
    """The server rejected a mutation permanently; its optimistic effects were rolled back."""

    kind = "mutation_failed"

    def __init__(self, mutation_id: int, name: str, error_kind: str, message: str) -> None:
        super().__init__(f"mutation {mutation_id} ({name}) failed on the server: {message}")
        self.mutation_id = mutation_id
        self.name = name
        self.error_kind = error_kind
        self.message = message


class ActionError(SyncedStoreError):
    """An action raised, timed out, or returned an output that does not match its model."""

    kind = "action_failed"


class ClientClosedError(SyncedStoreError):
    """The client was closed by this side; no further operations are possible."""

    kind = "client_closed"


class ConnectionEndedError(SyncedStoreError):
    """The server ended the session for good (kicked, auth failed, version mismatch, ...)."""

    kind = "connection_ended"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"connection ended: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail


class OfflineError(SyncedStoreError):
    """The operation needs the server (an action) and the client is not connected."""

    kind = "offline"


class StorageError(SyncedStoreError):
    """The storage backend failed. ``transient`` is true when a retry may succeed."""

    kind = "storage_error"

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient
