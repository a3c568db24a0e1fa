"""Throwaway PostgreSQL databases for tests: each test gets its own, dropped afterwards.

``temporary_database()`` creates a database with a random name on the server of
``SYNCED_STORE_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``: a
local server with trust auth, as on development machines and in CI), creates synced-store's
schema in it (``synced-store db upgrade``) and yields its DSN; on exit it is dropped, whatever
connections are still open to it (``WITH (FORCE)``). Needs the ``postgres`` extra.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ..storage.postgres_schema import upgrade

__all__ = ["ADMIN_DSN", "database_dsn", "temporary_database"]

#: The server (and a database to connect to for CREATE/DROP DATABASE) tests use.
ADMIN_DSN = os.environ.get(
    "SYNCED_STORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def database_dsn(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@contextlib.asynccontextmanager
async def temporary_database(
    admin_dsn: str | None = None, *, schema: bool = True, prefix: str = "synced_store_test"
) -> AsyncIterator[str]:
    """A new database (random name) with synced-store's schema (unless ``schema`` is
    False); yields its DSN and drops it on exit."""
    admin = admin_dsn or ADMIN_DSN
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        dsn = database_dsn(admin, name)
        try:
            if schema:
                target = await asyncpg.connect(dsn)
                try:
                    await upgrade(target)
                finally:
                    await target.close()
            yield dsn
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
