"""The full-text index of an SQLite instance (FTS5), kept by triggers on ``rows``.

Tables (created with the rest of the file's schema, storage/sqlite.py):

* ``search_tables``: the searchable tables and the JSON paths of their text and timestamp
  fields, as the server's schema last declared them (:func:`configure`);
* ``search_docs``: one row per indexed row (namespace, table, item key, timestamp), whose
  ``id`` is the row's ``rowid`` in
* ``search_fts``: an FTS5 table of the indexed text (``unicode61``, accents removed);
* ``search_queue``: the rows written since they were last indexed.

Triggers on ``rows`` queue a row of a searchable table on every insert, update (a new value, a
tombstone) and delete, in the statement that changes the row: in the writer's transaction and
savepoints, whoever writes (mutators, migrations, a restore), so a rollback leaves nothing
queued. :func:`index_queued` (``WriterTx.index_search``) re-indexes queued rows from their
current value, in the writer's transaction too. Indexing is deferred because re-indexing a
row costs time in its text's length: a reply streamed in 600 chunks would be tokenized 600
times (O(n²), 200 µs per chunk for a 2.6 KB message); queued, it is indexed once or twice.
The server indexes what is queued before every search, so a search still sees every commit
before it (server/search_indexer.py). Rows of other tables cost the trigger one lookup in
the (tiny) ``search_tables``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence

import orjson

from .search_index import MAX_INDEXED_CHARS, SearchHit

__all__ = [
    "INDEX_BATCH",
    "SEARCH_DDL",
    "configure",
    "fts_query",
    "index_queued",
    "json_path",
    "search",
    "upgrade_queue",
]

_N = MAX_INDEXED_CHARS

#: How many queued rows one :func:`index_queued` call indexes at most.
INDEX_BATCH = 500

#: The oldest queued rows, queued at versions up to ``?2`` (``search_queue_by_version``).
_BATCH = (
    "SELECT ns, tbl, item FROM search_queue WHERE version <= ?2 "
    "ORDER BY version, ns, tbl, item LIMIT ?1"
)
_INDEX_QUEUED = (
    f"DELETE FROM search_fts WHERE rowid IN (SELECT d.id FROM search_docs d "
    f"WHERE (d.ns, d.tbl, d.item) IN ({_BATCH}))",
    f"DELETE FROM search_docs WHERE (ns, tbl, item) IN ({_BATCH})",
    "INSERT INTO search_docs (ns, tbl, item, ts) "
    "SELECT r.ns, r.tbl, r.item, CASE WHEN json_type(r.value, s.ts_path) IN ('integer', 'real') "
    "THEN json_extract(r.value, s.ts_path) END "
    "FROM rows r JOIN search_tables s ON s.tbl = r.tbl "
    f"WHERE (r.ns, r.tbl, r.item) IN ({_BATCH}) AND r.deleted = 0 "
    "AND json_type(r.value, s.text_path) = 'text'",
    "INSERT INTO search_fts (rowid, body) "
    f"SELECT d.id, substr(json_extract(r.value, s.text_path), 1, {_N}) "
    "FROM search_docs d JOIN search_tables s ON s.tbl = d.tbl "
    "JOIN rows r ON r.ns = d.ns AND r.tbl = d.tbl AND r.item = d.item "
    f"WHERE (d.ns, d.tbl, d.item) IN ({_BATCH})",
    f"DELETE FROM search_queue WHERE (ns, tbl, item) IN ({_BATCH})",
)

_TABLES_DDL = """
CREATE TABLE IF NOT EXISTS search_tables (
    tbl TEXT PRIMARY KEY, text_path TEXT NOT NULL, ts_path TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_docs (
    id INTEGER PRIMARY KEY, ns TEXT NOT NULL, tbl TEXT NOT NULL, item TEXT NOT NULL, ts REAL,
    UNIQUE (ns, tbl, item)
);
CREATE INDEX IF NOT EXISTS search_docs_by_time ON search_docs (tbl, ts);
CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5(
    body, tokenize = 'unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS search_queue (
    ns TEXT NOT NULL, tbl TEXT NOT NULL, item TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (ns, tbl, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_queue_by_version ON search_queue (version, ns, tbl, item);
DROP TRIGGER IF EXISTS rows_search_insert;
DROP TRIGGER IF EXISTS rows_search_update;
DROP TRIGGER IF EXISTS rows_search_delete;
"""


def _queue_trigger(event: str, when: str = "") -> str:
    """The trigger that queues the row an ``event`` on ``rows`` changed, if its table is
    searchable (and ``when``). Not INSERT OR IGNORE: an outer statement's conflict policy
    overrides a trigger's."""
    r = "old" if event == "DELETE" else "new"
    return f"""
CREATE TRIGGER IF NOT EXISTS rows_search_queue_{event.lower()} AFTER {event} ON rows
WHEN {when}{r}.tbl IN (SELECT tbl FROM search_tables) BEGIN
    INSERT INTO search_queue SELECT {r}.ns, {r}.tbl, {r}.item, {r}.version WHERE NOT EXISTS (
        SELECT 1 FROM search_queue WHERE ns = {r}.ns AND tbl = {r}.tbl AND item = {r}.item);
END;"""


SEARCH_DDL = (
    _TABLES_DDL
    + _queue_trigger("INSERT")
    + _queue_trigger("UPDATE")
    # Deleting a tombstone (compaction) changes nothing indexed: its entry went with it.
    + _queue_trigger("DELETE", "old.deleted = 0 AND ")
)


def json_path(field: str) -> str:
    """The JSON path of a top-level field (``$."text"``); names never hold ``"`` or ``\\``
    (schema.py refuses them)."""
    return '$."' + field + '"'


#: A version above every real one (``index_queued`` with no bound).
_ALL = 2**62


def index_queued(
    conn: sqlite3.Connection, upto: int | None = None, limit: int = INDEX_BATCH
) -> bool:
    """Re-index up to ``limit`` of the rows queued at versions up to ``upto`` (all: None),
    oldest first, from their current value (a row deleted, tombstoned or without text loses
    its entry), inside the caller's transaction; True if more such rows remain. A row written
    again while queued keeps its place. Raises sqlite3 errors."""
    args = (limit, _ALL if upto is None else upto)
    for sql in _INDEX_QUEUED:
        conn.execute(sql, args)
    more = conn.execute(
        "SELECT 1 FROM search_queue WHERE version <= ? LIMIT 1", (args[1],)
    ).fetchone()
    return more is not None


def upgrade_queue(conn: sqlite3.Connection) -> None:
    """Before the file's schema script: a ``search_queue`` of an earlier development layout
    (no ``version`` column) is dropped, and the index rebuilt from the rows when the server
    next configures it (its queued rows are unknown). Raises sqlite3 errors."""
    cols = [r[1] for r in conn.execute("PRAGMA table_info(search_queue)")]
    if cols and "version" not in cols:
        conn.execute("DROP TABLE search_queue")
        conn.execute("DELETE FROM search_tables")


def _drop(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(
        "DELETE FROM search_fts WHERE rowid IN (SELECT id FROM search_docs WHERE tbl = ?)",
        (table,),
    )
    conn.execute("DELETE FROM search_docs WHERE tbl = ?", (table,))
    conn.execute("DELETE FROM search_queue WHERE tbl = ?", (table,))
    conn.execute("DELETE FROM search_tables WHERE tbl = ?", (table,))


def configure(conn: sqlite3.Connection, tables: Mapping[str, tuple[str, str | None]]) -> list[str]:
    """Make the index cover exactly ``tables`` (``{table: (text field, timestamp field)}``),
    inside the caller's transaction: a table that is new or whose fields changed is indexed
    from its stored rows, one no longer searchable loses its entries. Returns the tables
    (re)indexed. Raises sqlite3 errors."""
    have = {t: (tp, sp) for t, tp, sp in conn.execute("SELECT * FROM search_tables")}
    want = {
        t: (json_path(text), None if stamp is None else json_path(stamp))
        for t, (text, stamp) in tables.items()
    }
    for t in have:
        if want.get(t) != have[t]:
            _drop(conn, t)
    built = []
    for t, (tp, sp) in want.items():
        if have.get(t) == (tp, sp):
            continue
        conn.execute("INSERT INTO search_tables VALUES (?, ?, ?)", (t, tp, sp))
        conn.execute(
            "INSERT INTO search_docs (ns, tbl, item, ts) SELECT ns, tbl, item, "
            "CASE WHEN json_type(value, ?2) IN ('integer', 'real') "
            "THEN json_extract(value, ?2) END "
            "FROM rows WHERE tbl = ?1 AND deleted = 0 AND json_type(value, ?3) = 'text'",
            (t, sp, tp),
        )
        conn.execute(
            f"INSERT INTO search_fts (rowid, body) "
            f"SELECT d.id, substr(json_extract(r.value, ?2), 1, {_N}) FROM search_docs d "
            "JOIN rows r ON r.ns = d.ns AND r.tbl = d.tbl AND r.item = d.item "
            "WHERE d.tbl = ?1",
            (t, tp),
        )
        conn.execute("DELETE FROM search_queue WHERE tbl = ?", (t,))  # all indexed just now
        built.append(t)
    return built


def fts_query(words: Sequence[str]) -> str:
    """An FTS5 query matching rows holding every word: each one a quoted string (FTS5
    tokenizes it; quotes inside are doubled), so no input is ever operator syntax."""
    return " AND ".join('"' + w.replace('"', '""') + '"' for w in words)


#: Newest-first searches first take this many of the newest visible rows (from the index
#: ``search_docs_by_time``) and find which of them match with one FTS5 query over their rowid
#: range; when ``limit`` of them match (a common word), those are the answer. Otherwise the
#: word is rare enough for all its matches to be ordered, read from the full-text index.
NEWEST_WINDOW = 2000

_WINDOW = (
    "SELECT d.id FROM search_docs d INDEXED BY search_docs_by_time "
    "WHERE d.tbl = ? AND d.ns IN ({marks}) ORDER BY d.ts DESC, d.id DESC LIMIT ?"
)


def _newest(
    conn: sqlite3.Connection, table: str, match: str, namespaces: Sequence[str], limit: int
) -> list[int] | None:
    """The ids of the newest ``limit`` matches if the newest :data:`NEWEST_WINDOW` visible rows
    hold them (or are all the visible rows), else None."""
    marks = ", ".join("?" * len(namespaces))
    window = [
        r[0] for r in conn.execute(_WINDOW.format(marks=marks), (table, *namespaces, NEWEST_WINDOW))
    ]
    hits = set()
    if window:
        hits = {
            r[0]
            for r in conn.execute(
                "SELECT rowid FROM search_fts WHERE search_fts MATCH ? AND rowid BETWEEN ? AND ?",
                (match, min(window), max(window)),
            )
        }
    ids = [i for i in window if i in hits][:limit]
    return ids if len(ids) == limit or len(window) < NEWEST_WINDOW else None


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the statements inside in one read transaction (unless one is open already)."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):  # interrupted or closed: nothing to keep
            conn.execute("COMMIT")


def search(
    conn: sqlite3.Connection,
    table: str,
    words: Sequence[str],
    namespaces: Sequence[str],
    limit: int,
    *,
    newest_first: bool,
) -> list[SearchHit]:
    """Live rows of ``table`` in ``namespaces`` holding every word, newest first (by the
    timestamp field; rows without one last; no score) or by relevance (``bm25``). Raises
    sqlite3 errors.

    Newest first, a common word is answered from the newest rows (:data:`NEWEST_WINDOW`), any
    other by ordering its matches on the index alone; only the rows returned are read. Its
    statements read one snapshot (a read transaction): an indexing pass that commits meanwhile
    cannot renumber the rows between them."""
    if not namespaces:
        return []
    with _snapshot(conn):
        match = fts_query(words)
        marks = ", ".join("?" * len(namespaces))
        args: tuple[str | int, ...]
        ids = _newest(conn, table, match, namespaces, limit) if newest_first else None
        if ids is not None:
            order = "d.ts DESC, d.id DESC"
            inner = (
                "SELECT d.id, d.ns, d.tbl, d.item, d.ts, NULL AS score FROM search_docs d "
                f"WHERE d.id IN ({', '.join('?' * len(ids))})"
            )
            args = (*ids,)
        else:
            if newest_first:
                score, order = "NULL", "d.ts DESC NULLS LAST, d.id DESC"
            else:
                score, order = "-bm25(search_fts)", "score DESC, d.id DESC"
            # CROSS JOIN: the matches first (SQLite would otherwise walk search_docs_by_time and
            # probe every row, slow for a rare word).
            inner = (
                f"SELECT d.id, d.ns, d.tbl, d.item, d.ts, {score} AS score "
                "FROM search_fts CROSS JOIN search_docs d ON d.id = search_fts.rowid "
                f"WHERE search_fts MATCH ? AND d.tbl = ? AND d.ns IN ({marks}) "
                f"ORDER BY {order} LIMIT ?"
            )
            args = (match, table, *namespaces, limit)
        rows = conn.execute(
            f"SELECT d.ns, d.item, r.sk, r.value, d.score FROM ({inner}) d "
            "JOIN rows r ON r.ns = d.ns AND r.tbl = d.tbl AND r.item = d.item AND r.deleted = 0 "
            f"ORDER BY {order}",
            args,
        ).fetchall()
    loads = orjson.loads
    return [
        SearchHit(ns, item, sk, loads(v), None if s is None else float(s))
        for ns, item, sk, v, s in rows
    ]
