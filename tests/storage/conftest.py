"""The storage contract suite runs against every backend in ``BACKENDS``.

A backend entry is an async context manager factory ``(tmp_path) -> Backend``: the
:class:`~synced_store.storage.base.StorageBackend` under test, plus ``damage(instance_id)``,
which breaks one instance's job storage behind the backend's back so that its next job
statement fails (the contract's "a failed statement" case). Adding a backend is adding one
entry here. PostgreSQL runs on the server of ``SYNCED_STORE_TEST_POSTGRES`` (a local one with
trust auth by default), each test in a database of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from synced_store.storage.base import InstanceStore, StorageBackend
from synced_store.storage.postgres import PostgresBackend
from synced_store.storage.sqlite_backend import SqliteBackend
from synced_store.testing.postgres import temporary_database


@dataclass
class Backend:
    """A backend under test and its fault injection."""

    storage: StorageBackend
    damage: Callable[[str], Awaitable[None]]


@contextlib.asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Backend]:
    storage = SqliteBackend(tmp_path / "data")

    async def damage(instance_id: str) -> None:
        conn = sqlite3.connect(storage.path(instance_id))
        conn.execute("ALTER TABLE jobs RENAME TO jobs_damaged")
        conn.commit()
        conn.close()

    yield Backend(storage, damage)


@contextlib.asynccontextmanager
async def _postgres(tmp_path: Path) -> AsyncIterator[Backend]:
    async with temporary_database() as dsn:
        storage = PostgresBackend(dsn)

        async def damage(instance_id: str) -> None:
            # Every instance shares the jobs table: this database is the test's own.
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("ALTER TABLE synced_store.jobs RENAME TO jobs_damaged")
            finally:
                await conn.close()

        yield Backend(storage, damage)


BACKENDS: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[Backend]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with BACKENDS[request.param](tmp_path) as b:
        await b.storage.start()
        try:
            yield b
        finally:
            await b.storage.close()


@pytest.fixture
def storage(backend: Backend) -> StorageBackend:
    return backend.storage


@pytest.fixture
async def store(storage: StorageBackend) -> AsyncIterator[InstanceStore]:
    """Instance ``room``, opened (so created) for its writer."""
    s = await storage.open_instance("room")
    try:
        yield s
    finally:
        await s.close()
