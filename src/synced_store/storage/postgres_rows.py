"""Reading rows of a PostgreSQL instance: point reads, scans, and what changed since a version
(for the writer, for readers, and for a process taking in another's commits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg
import orjson

from ..types import EntryKey, RowKey
from .postgres_errors import DRIVER_ERRORS, Conn, pg_error
from .postgres_schema import SCHEMA
from .postgres_search import search
from .records import ChangedRow, Changes, HistoryCompactedError, Row, ScanRow
from .search_index import SearchHit

if TYPE_CHECKING:
    from .postgres import PostgresBackend

__all__ = [
    "PostgresReader",
    "changed_rows",
    "nul_free_start",
    "read_row",
    "scan_rows",
    "scan_sql",
]

S = SCHEMA
_READ = (
    f"SELECT sk, value FROM {S}.rows WHERE inst = $1 AND ns = $2 AND tbl = $3 AND item = $4 "
    "AND NOT deleted"
)


def _changes_sql(upto: str) -> str:
    """Rows and clients changed in ``($2, upto]`` of instance ``$1``, with that version and
    the horizon, in one statement (one snapshot); ``$3`` is the row limit."""
    return (
        f"WITH i AS (SELECT key, {upto} AS upto, horizon FROM {S}.instances WHERE key = $1), "
        "c AS (SELECT array_agg(client_id) AS ids, array_agg(last_mutation_id) AS lmids "
        f"FROM {S}.clients, i WHERE inst = i.key AND version > $2 AND version <= i.upto) "
        "SELECT i.upto, i.horizon, c.ids, c.lmids, r.version, r.ns, r.tbl, r.item, r.sk, "
        "r.value, r.deleted FROM i CROSS JOIN c LEFT JOIN LATERAL (SELECT version, ns, tbl, "
        f"item, sk, value, deleted FROM {S}.rows WHERE inst = i.key AND version > $2 "
        "AND version <= i.upto ORDER BY version LIMIT $3) r ON true"
    )


#: Up to the committed version; up to the writer's version (``$4``: it holds the lock).
_CHANGES = _changes_sql("version")
_CHANGES_UPTO = _changes_sql("$4::bigint")


def _has_nul(*parts: str) -> bool:
    return any("\x00" in p for p in parts)


def nul_free_start(start: EntryKey, exclusive: bool, reverse: bool) -> tuple[EntryKey, bool]:
    """The same scan bound without U+0000, which PostgreSQL's text cannot hold (and so no
    stored key contains). With ``u`` the part of a key before its first U+0000, a stored
    string is past ``u + "\0…"`` exactly when it is past ``u + "\1"`` or equal to it, and
    before it exactly when it is before ``u + "\1"``."""
    sk, item = start
    if "\x00" in sk:
        bound = sk[: sk.index("\x00")] + "\x01"
        return EntryKey(bound, ""), reverse  # forward: >= (bound, ""); reverse: < (bound, "")
    if "\x00" in item:
        bound = item[: item.index("\x00")] + "\x01"
        return EntryKey(sk, bound), reverse
    return start, exclusive


async def read_row(conn: Conn, inst: int, key: RowKey) -> Row | None:
    """``(sort_key, value)`` of a live row (raises driver errors)."""
    if _has_nul(*key):
        return None  # no stored key holds U+0000
    r = await conn.fetchrow(_READ, inst, key.ns, key.table, key.item)
    return None if r is None else (r[0], orjson.loads(r[1]))


def scan_sql(start: bool, exclusive: bool, reverse: bool, budget: bool = False) -> str:
    """The scan statement: ``$1..$3`` instance, namespace, table; with ``start`` ``$4, $5``
    its sort and item key; then the limit; with ``budget`` last the byte budget: the page's
    keys and value sizes are read first (``octet_length`` reads no TOASTed value), and only
    the rows up to the one that reaches the budget are read in full."""
    where, n = "", 4
    if start:
        op = ("<" if exclusive else "<=") if reverse else (">" if exclusive else ">=")
        where, n = f" AND (sk, item) {op} ($4, $5)", 6
    order = "DESC" if reverse else "ASC"
    by = f"ORDER BY sk {order}, item {order}"
    if not budget:
        return (
            f"SELECT sk, item, value FROM {S}.rows WHERE inst = $1 AND ns = $2 AND tbl = $3 "
            f"AND NOT deleted{where} {by} LIMIT ${n}"
        )
    return (
        f"WITH page AS (SELECT sk, item, octet_length(value) AS n FROM {S}.rows "
        f"WHERE inst = $1 AND ns = $2 AND tbl = $3 AND NOT deleted{where} {by} LIMIT ${n}), "
        f"run AS (SELECT sk, item, sum(n) OVER (ORDER BY sk {order}, item {order} "
        "ROWS UNBOUNDED PRECEDING) - n AS before FROM page) "
        f"SELECT r.sk, r.item, r.value FROM run JOIN {S}.rows r ON r.inst = $1 AND r.ns = $2 "
        f"AND r.tbl = $3 AND r.item = run.item WHERE run.before < ${n + 1} "
        f"ORDER BY run.sk {order}, run.item {order}"
    )


async def scan_rows(
    conn: Conn,
    inst: int,
    ns: str,
    table: str,
    start: EntryKey | None,
    *,
    exclusive: bool,
    reverse: bool,
    limit: int,
    max_bytes: int | None = None,
) -> list[ScanRow]:
    """One page of live rows in scan order (raises driver errors); with ``max_bytes``, it
    stops after the row whose value brings the values read to ``max_bytes`` (the rows after
    it are never read)."""
    if _has_nul(ns, table):
        return []
    if start is not None:
        start, exclusive = nul_free_start(start, exclusive, reverse)
    sql = scan_sql(start is not None, exclusive, reverse, max_bytes is not None)
    args: tuple[str | int, ...] = () if start is None else (start[0], start[1])
    if max_bytes is not None:
        rows = await conn.fetch(sql, inst, ns, table, *args, limit, max(1, max_bytes))
    else:
        rows = await conn.fetch(sql, inst, ns, table, *args, limit)
    loads = orjson.loads
    return [(EntryKey(sk, item), loads(value)) for sk, item, value in rows]


def _changed(rows: list[asyncpg.Record], limit: int) -> Changes:
    first = rows[0]
    ids, lmids = first[2] or [], first[3] or []
    clients = {cid: int(lmid) for cid, lmid in zip(ids, lmids, strict=True)}
    found = [r for r in rows if r[4] is not None]
    if len(found) > limit:
        return Changes(int(first[0]), None, clients)
    return Changes(
        int(first[0]),
        [ChangedRow(int(r[4]), r[5], r[6], r[7], r[8], None if r[10] else r[9]) for r in found],
        clients,
    )


async def changed_rows(
    conn: Conn, inst: int, after: int, *, upto: int | None, horizon: int, limit: int
) -> Changes:
    """Rows (and clients) changed after ``after``: up to ``upto`` (inside the writer's
    transaction, which knows its version and horizon and holds the lock), or with ``upto``
    None up to the committed version, read with the horizon in one statement (one snapshot).
    Raises driver errors and :class:`HistoryCompactedError`."""
    if upto is not None:
        if horizon > after:
            raise HistoryCompactedError(f"tombstones after version {after} were forgotten")
        rows = await conn.fetch(_CHANGES_UPTO, inst, after, limit + 1, upto)
    else:
        rows = await conn.fetch(_CHANGES, inst, after, limit + 1)
    if not rows:
        raise HistoryCompactedError("the instance is gone")
    if int(rows[0][1]) > after:
        raise HistoryCompactedError(f"tombstones after version {after} were forgotten")
    return _changed(rows, limit)


class PostgresReader:
    """Committed rows of an instance, each read on a pooled connection (an action's context;
    ``CommittedReader`` of storage/base.py)."""

    def __init__(self, backend: PostgresBackend, inst: int) -> None:
        self._backend = backend
        self._inst = inst

    async def read(self, key: RowKey) -> Row | None:
        try:
            async with self._backend.connection() as conn:
                return await read_row(conn, self._inst, key)
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def scan(
        self,
        ns: str,
        table: str,
        start: EntryKey | None,
        *,
        exclusive: bool,
        reverse: bool,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[ScanRow]:
        try:
            async with self._backend.connection() as conn:
                return await scan_rows(
                    conn,
                    self._inst,
                    ns,
                    table,
                    start,
                    exclusive=exclusive,
                    reverse=reverse,
                    limit=limit,
                    max_bytes=max_bytes,
                )
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def search(
        self,
        table: str,
        words: Sequence[str],
        namespaces: Sequence[str],
        limit: int,
        *,
        newest_first: bool,
    ) -> list[SearchHit]:
        """Committed rows matching every word (postgres_search.py), on one of the backend's
        few search slots (``PostgresBackend.search_slots``)."""
        try:
            async with self._backend.search_slots, self._backend.connection() as conn:
                return await search(
                    conn,
                    S,
                    self._inst,
                    table,
                    words,
                    namespaces,
                    limit,
                    newest_first=newest_first,
                )
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def close(self) -> None:
        """Nothing held between reads."""
