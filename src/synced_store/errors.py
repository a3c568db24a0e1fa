"""Exceptions raised by synced-store.

Every exception derives from :class:`SyncedStoreError`, so ``except SyncedStoreError`` catches
anything the library raises on purpose. The tree, with the layer that raises each class::

    SyncedStoreError
    ├── SchemaError                 definition time: define_schema / define_backend_config
    ├── ValidationError (ValueError) core: an input, output or row value is invalid
    │   ├── KeyTooLargeError        core: table name + item key over 256 bytes
    │   ├── ValueTooLargeError      core: a value's JSON encoding is longer than 1 MiB
    │   └── ValueTooDeepError       core: a JSON value nests more than 32 arrays/objects
    ├── UnknownNameError (KeyError) core: unknown table, mutator or action
    ├── PermissionDeniedError       core: another user's private rows, server-only rows on a client
    ├── MutatorError                core: a mutator misbehaved (awaited real I/O on a client pass)
    ├── ProtocolError               protocol: a malformed or out-of-order wire message
    ├── MutationFailedError         client: the server rejected a mutation permanently
    ├── ActionError                 client/server: an action raised or returned an invalid output
    ├── ClientClosedError           client: the store was closed by *this* side
    ├── ConnectionEndedError        client: the server ended the session for good
    ├── ConnectionLost              client: the connection closed (close code); it reconnects
    ├── OfflineError                client: the operation needs the server; the client is offline
    ├── QuotaExceededError          server: a per-user or per-instance quota (queued actions)
    ├── OverloadedError             server: at capacity (open instances); retry later
    └── StorageError                storage: the database failed (``transient``: retry may help)
        └── InstanceUnavailableError server: the instance failed and is reopening (backoff)
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "ClientClosedError",
    "ConnectionEndedError",
    "ConnectionLost",
    "InstanceUnavailableError",
    "KeyTooLargeError",
    "MutationFailedError",
    "MutatorError",
    "OfflineError",
    "OverloadedError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "SchemaError",
    "StorageError",
    "SyncedStoreError",
    "UnknownNameError",
    "ValidationError",
    "ValueTooDeepError",
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


class ValueTooDeepError(ValidationError):
    """A JSON value (a row value, mutation args, an action input) nests arrays and objects
    more than 32 levels deep (``MAX_VALUE_DEPTH`` in ``synced_store.core.keys``)."""

    kind = "value_too_deep"


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


class ConnectionLost(SyncedStoreError):
    """The connection closed (``code``: the WebSocket close code, 1006 if none; ``reason``).

    Raised by a transport's ``send``/``recv`` (``synced_store.client.transport``); the client
    catches it and reconnects with backoff, unless the code ends the session for good (then
    :class:`ConnectionEndedError`)."""

    kind = "connection_lost"

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class OfflineError(SyncedStoreError):
    """The operation needs the server (an action) and the client is not connected."""

    kind = "offline"


class StorageError(SyncedStoreError):
    """The storage backend failed. ``transient`` is true when a retry may succeed."""

    kind = "storage_error"

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class InstanceUnavailableError(StorageError):
    """The instance's storage failed (disk full, I/O error, read-only or corrupt file). The
    instance is closed and reopened with backoff; its clients reconnect (close code 1011)."""

    kind = "instance_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class QuotaExceededError(SyncedStoreError):
    """A quota was reached (for example too many queued action jobs for one user); the
    mutation that hit it is rejected as a whole."""

    kind = "quota_exceeded"


class OverloadedError(SyncedStoreError):
    """The server is at capacity (open instances, connections); try again later (1013)."""

    kind = "overloaded"
