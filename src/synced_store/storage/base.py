"""The storage interface the server needs. Guarantees: one writer per instance, serializable
transactions, and readers that see only committed data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from ..types import EntryKey, RowKey

__all__ = ["InstanceStore", "Row"]

Row = tuple[str, Any]


class InstanceStore(Protocol):
    """One instance's database."""

    version: int

    def begin(self) -> None:
        """Start the writer's transaction."""

    def commit(self, version: int) -> None:
        """Record ``version`` and commit it."""

    def rollback(self) -> None:
        """Abandon it."""

    def savepoint(self) -> None:
        """Open a savepoint (one per mutation)."""

    def release(self) -> None:
        """Keep the savepoint's work."""

    def rollback_savepoint(self) -> None:
        """Undo the savepoint's work."""

    def read(self, key: RowKey) -> Row | None:
        """A committed-or-own-transaction row."""

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        """Rows of a table in scan order."""

    def write(self, key: RowKey, sort_key: str, encoded: bytes, version: int) -> None:
        """Upsert a row at ``version``."""

    def remove(self, key: RowKey, version: int) -> bool:
        """Tombstone a row at ``version``; False if it did not exist."""

    def close(self) -> None:
        """Close the database."""
