from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from appdefs import backend
from synced_store.testing import TestHarness, create_test_harness

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[TestHarness]:
    h = await create_test_harness(backend, data_dir=tmp_path / "server")
    try:
        yield h
    finally:
        await h.dispose(check_errors=False)


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own (synced-store's schema in it), dropped after."""
    from synced_store.testing.postgres import temporary_database

    async with temporary_database() as dsn:
        yield dsn
