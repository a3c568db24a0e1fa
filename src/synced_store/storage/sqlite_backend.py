"""The embedded default backend: a data dir with one SQLite file per instance."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path

from ..errors import InstanceUnavailableError, SyncedStoreError
from .errors import storage_error
from .ids import validate_instance_id
from .sqlite import SqliteInstanceStore, instance_path
from .sqlite_admin import SqliteInspector, open_read_only

__all__ = ["INSTANCE_SUFFIX", "SqliteBackend"]

INSTANCE_SUFFIX = ".sqlite3"


class SqliteBackend:
    """Instances as ``<data_dir>/<instance_id>.sqlite3`` (storage/base.py's
    ``StorageBackend``). ``durability``: ``"normal"`` survives a killed process, ``"full"``
    also power loss (``synchronous=FULL``). One process serves a data dir."""

    shared = False

    def __init__(self, data_dir: str | Path, *, durability: str = "normal") -> None:
        if durability not in ("normal", "full", "off"):
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        self.data_dir = Path(data_dir)
        self.durability = durability
        self.description = f"data dir {self.data_dir}"

    def validate_instance_id(self, instance_id: str) -> str:
        return validate_instance_id(instance_id)

    def path(self, instance_id: str) -> Path:
        """The database file of an instance (the id is validated)."""
        return instance_path(self.data_dir, instance_id)

    def location(self, instance_id: str) -> str:
        return str(self.path(instance_id))

    async def start(self) -> None:
        """Create the data dir."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc) from exc

    async def check(self) -> str | None:
        """Write, sync and remove a small file in the data dir (a full disk or a read-only
        mount shows), in a worker thread."""
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> str | None:
        path = self.data_dir / f".healthz-{os.getpid()}"
        try:
            with open(path, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
            return None
        except OSError as exc:
            return exc.strerror or str(exc)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    async def exists(self, instance_id: str) -> bool:
        return self.path(instance_id).exists()

    async def list_instances(self) -> list[str]:
        """Ids of the instance files in the data dir (other files are ignored). Raises
        :class:`InstanceUnavailableError` if the data dir does not exist."""
        if not self.data_dir.is_dir():
            raise InstanceUnavailableError(f"data dir {self.data_dir} does not exist")
        out = []
        for p in sorted(self.data_dir.glob("*" + INSTANCE_SUFFIX)):
            try:
                out.append(validate_instance_id(p.name[: -len(INSTANCE_SUFFIX)]))
            except SyncedStoreError:
                continue
        return out

    async def instances_with_unfinished_jobs(self) -> list[str]:
        return await asyncio.to_thread(self._scan_jobs, "status IN ('pending', 'running')", ())

    def _scan_jobs(self, where: str, args: tuple[float, ...]) -> list[str]:
        if not self.data_dir.is_dir():
            return []
        found = []
        for p in sorted(self.data_dir.glob("*" + INSTANCE_SUFFIX)):
            try:
                instance_id = validate_instance_id(p.name[: -len(INSTANCE_SUFFIX)])
                conn = open_read_only(p)
            except (SyncedStoreError, sqlite3.Error):
                continue
            try:
                row = conn.execute(f"SELECT 1 FROM jobs WHERE {where} LIMIT 1", args).fetchone()
            except sqlite3.Error:
                row = None  # not an instance database, or no jobs table yet
            finally:
                conn.close()
            if row is not None:
                found.append(instance_id)
        return found

    async def instances_with_due_jobs(self, now: float) -> list[str]:
        """Instances with a pending job due by ``now`` (running jobs belong to this process)."""
        return await asyncio.to_thread(
            self._scan_jobs, "status = 'pending' AND next_run_at <= ?", (now,)
        )

    async def open_instance(
        self, instance_id: str, *, create: bool = True, lock_timeout: float | None = None
    ) -> SqliteInstanceStore:
        path = self.path(instance_id)
        if not create and not path.is_file():
            raise InstanceUnavailableError(f"no instance {instance_id!r} in {self.data_dir}")
        busy = 20 if lock_timeout is None else int(lock_timeout * 1000)
        return await asyncio.to_thread(
            SqliteInstanceStore, path, durability=self.durability, busy_timeout_ms=busy
        )

    async def inspect(self, instance_id: str) -> SqliteInspector:
        path = self.path(instance_id)
        if not path.is_file():
            raise InstanceUnavailableError(f"no instance {instance_id!r} in {self.data_dir}")
        return SqliteInspector(instance_id, path)

    async def close(self) -> None:
        """Nothing to release: each instance store closes its own file."""
