"""The read-only view behind ``ctx.external_store`` (core/external.py): another instance's
tables as a client of it would see them, with the read limits of spec §4.7. No I/O."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pydantic_core

from ..errors import PermissionDeniedError, QuotaExceededError
from ..schema import Schema
from ..types import EntryKey, RowKey
from .context import AsyncTx, ReadContext, TableHandle, Tx
from .external import MAX_EXTERNAL_READ_BYTES, MAX_EXTERNAL_READ_ITEMS

__all__ = ["EmptyTx", "ExternalStore"]


class EmptyTx:
    """A client pass's external store: every table is empty (reads are not recorded)."""

    copy_on_read = False
    is_async: Literal[False] = False

    def read(self, key: RowKey) -> tuple[str, Any] | None:
        return None

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        return iter(())

    def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        raise PermissionDeniedError("external stores are read-only")

    def remove(self, key: RowKey) -> None:
        raise PermissionDeniedError("external stores are read-only")

    def note_point(self, key: RowKey) -> None:
        return None

    def note_range(self, ns: str, table: str, low: EntryKey | None, high: EntryKey | None) -> None:
        return None


#: Rows of the first page an external read takes; each next page takes twice as many, up to
#: :data:`_MAX_PAGE`: a read stops at the byte limit after few rows of large values (a page
#: holds at most ``_MAX_PAGE`` values of ``MAX_VALUE_BYTES``), and one of many small rows
#: costs few queries.
_FIRST_PAGE = 1
_MAX_PAGE = 16


class _CappedHandle(TableHandle):
    """A table handle whose scans return at most ``MAX_EXTERNAL_READ_ITEMS`` rows and
    ``MAX_EXTERNAL_READ_BYTES`` bytes; a larger read raises :class:`QuotaExceededError`. It
    reads in small pages and stops at the first page past a limit: a refused read never
    holds more than one page past ``MAX_EXTERNAL_READ_BYTES`` in memory."""

    __slots__ = ()

    async def _scan(
        self,
        prefix: str | dict[str, str] | None = None,
        limit: int | None = None,
        cursor: EntryKey | str | None = None,
        reverse: bool = False,
    ) -> list[tuple[EntryKey, Any]]:
        cap = MAX_EXTERNAL_READ_ITEMS
        want = cap + 1 if limit is None or limit > cap else limit
        rows: list[tuple[EntryKey, Any]] = []
        size = 0
        page = _FIRST_PAGE
        while len(rows) < want:
            n = min(page, want - len(rows))
            got = await super()._scan(prefix, n, cursor, reverse)
            rows += got
            size += sum(len(pydantic_core.to_json(v)) for _, v in got)
            if size > MAX_EXTERNAL_READ_BYTES:
                raise QuotaExceededError(
                    f"a read of external table {self._table!r} returns more than "
                    f"{MAX_EXTERNAL_READ_BYTES} bytes; pass a smaller limit="
                )
            if len(got) < n:
                break
            cursor = got[-1][0]  # the next page starts after the last row read
            page = min(2 * page, _MAX_PAGE)
        if len(rows) > cap:
            raise QuotaExceededError(
                f"a read of external table {self._table!r} returns more than {cap} rows; "
                "pass limit= (and page with cursor=)"
            )
        return rows


class ExternalStore(ReadContext):
    """Read-only tables of another instance, as the calling user sees them there: its
    public rows and the user's own private rows (``private_of_user(ctx.user_id)``), never
    another user's private rows nor server-only rows. Empty on a client pass."""

    def __init__(self, schema: Schema, tx: Tx | AsyncTx, user_id: str, instance_id: str) -> None:
        # ``is_server=False``: the visibility rules of a client of that instance.
        super().__init__(schema, tx, user_id, is_server=False, writable=False)
        self.instance_id = instance_id

    def _handle(self, ns: str, name: str) -> TableHandle:
        if name not in self.schema.tables:
            return super()._handle(ns, name)  # raises UnknownNameError
        return _CappedHandle(self.tx, ns, name, self.schema.tables[name], False)

    def server_only(self) -> Any:
        """Refused: an instance's server-only rows are never readable from another."""
        raise PermissionDeniedError("server-only rows of another instance are not readable")
