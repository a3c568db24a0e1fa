"""Mapping driver errors to synced-store's storage errors: retry, or fail the instance."""

from __future__ import annotations

import sqlite3

from ..errors import InstanceUnavailableError, StorageError

__all__ = ["storage_error"]

#: SQLite messages of errors that a retry of the same transaction may fix: another connection
#: holds a lock, or the statement was interrupted.
_TRANSIENT = ("locked", "busy", "interrupted")


def storage_error(exc: sqlite3.Error | OSError) -> StorageError:
    """The :class:`StorageError` for a driver or file-system error.

    Lock contention is ``transient`` (the writer retries the batch with backoff). Everything
    else — disk full, I/O errors, a read-only or corrupt file, a missing directory — is an
    :class:`InstanceUnavailableError`: the instance stops, its clients reconnect, and it is
    reopened with backoff once the cause is gone.
    """
    if isinstance(exc, OSError):
        return InstanceUnavailableError(f"{exc.strerror or exc}")
    msg = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and any(w in msg for w in _TRANSIENT):
        return StorageError(f"sqlite: {msg}", transient=True)
    return InstanceUnavailableError(f"sqlite: {msg}")
