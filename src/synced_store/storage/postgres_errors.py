"""PostgreSQL driver errors as synced-store's storage errors: retry, or fail the instance."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..errors import InstanceUnavailableError, StorageError, ValidationError

__all__ = ["DRIVER_ERRORS", "TRANSIENT_SQLSTATES", "Conn", "check_text", "clean_text", "pg_error"]

#: A connection, pooled or not.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

#: SQLSTATEs a retry of the same transaction may fix: a serialization failure, a deadlock,
#: a lock not granted within ``lock_timeout``, a statement cancelled by its timeout.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})


def pg_error(exc: BaseException) -> StorageError:
    """The :class:`StorageError` for an asyncpg or connection error.

    Lock waits and serialization failures are ``transient`` (the writer retries its batch).
    Everything else — a lost connection (a restart, ``pg_terminate_backend``, a failover), a
    server that refuses connections, a missing table, a full disk — is an
    :class:`InstanceUnavailableError`: the instance stops, its clients get 1011 and reconnect,
    and the registry reopens it with backoff on a fresh connection.
    """
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None)
        if state in TRANSIENT_SQLSTATES:
            return StorageError(f"postgres: {exc}", transient=True)
        return InstanceUnavailableError(f"postgres: {exc}")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return StorageError("postgres: no connection free in time (pool exhausted)", transient=True)
    return InstanceUnavailableError(f"postgres connection: {str(exc) or type(exc).__name__}")


#: What a PostgreSQL driver call may raise (anything else is a bug and propagates).
DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a query started as the server dropped the connection
    OSError,
    asyncio.TimeoutError,
)


def check_text(value: str, what: str) -> str:
    """``value`` if PostgreSQL's ``text`` can hold it, else :class:`ValidationError` (it
    cannot hold U+0000): raised before anything is sent, so the transaction stays usable."""
    if "\x00" in value:
        raise ValidationError(f"{what} contains U+0000, which the database cannot store")
    return value


def clean_text(value: str) -> str:
    """Free text (an error message) with any U+0000 replaced, so it can always be stored."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value
