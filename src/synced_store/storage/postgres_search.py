"""The full-text index of PostgreSQL instances: a ``tsvector`` per row with a GIN index, kept
by a trigger on ``rows`` (layout version 2, created by ``synced-store db upgrade``).

* ``search_tables (inst, tbl, text_field, ts_field)``: each instance's searchable tables, as
  its server's schema last declared them (:func:`configure`);
* ``search_docs (inst, ns, tbl, item, ts, tsv)``: one row per indexed row, ``tsv`` the
  ``to_tsvector('simple', text)`` of its text field (no stemming: whole words, lower-cased;
  accents are kept, unlike SQLite's index), with a GIN index, and a b-tree in result order
  (newest first), so the planner can walk the newest rows for a common word (filtering
  them by ``tsv``) rather than sort all its matches.

The trigger ``rows_search`` runs for every row written, tombstoned or deleted: rows of a table
that ``search_tables`` does not list cost it one primary-key lookup. It changes the index in
the statement that changes the row, so a rolled-back transaction or savepoint (and the
writer's buffered writes it never sent) leaves no entry, whoever writes: mutators,
migrations, ``db copy`` (which copies no index: the server indexes a copied instance when it
first opens it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from .postgres_errors import Conn
from .search_index import MAX_INDEXED_CHARS, SearchHit

__all__ = ["SEARCH_V2", "configure", "search", "search_v2"]

_C = 'text COLLATE "C" NOT NULL'


def search_v2(schema: str) -> str:
    """The layout step 1 -> 2: the index's tables and trigger in ``schema``."""
    s = schema
    return f"""
CREATE TABLE {s}.search_tables (
    inst integer NOT NULL, tbl {_C}, text_field text NOT NULL, ts_field text,
    PRIMARY KEY (inst, tbl)
);
CREATE TABLE {s}.search_docs (
    inst integer NOT NULL, ns {_C}, tbl {_C}, item {_C}, ts double precision,
    tsv tsvector NOT NULL, PRIMARY KEY (inst, ns, tbl, item)
);
CREATE INDEX search_docs_tsv ON {s}.search_docs USING gin (tsv);
CREATE INDEX search_docs_by_time ON {s}.search_docs (inst, tbl, ts DESC NULLS LAST, item DESC);
CREATE FUNCTION {s}.search_index() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    cfg record;
    v json;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    SELECT text_field, ts_field INTO cfg FROM {s}.search_tables
        WHERE inst = r.inst AND tbl = r.tbl;
    IF NOT FOUND THEN RETURN NULL; END IF;
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM {s}.search_docs
            WHERE inst = OLD.inst AND ns = OLD.ns AND tbl = OLD.tbl AND item = OLD.item;
    END IF;
    IF TG_OP <> 'DELETE' AND NOT NEW.deleted THEN
        v := NEW.value::json;
        IF json_typeof(v -> cfg.text_field) = 'string' THEN
            INSERT INTO {s}.search_docs VALUES (
                NEW.inst, NEW.ns, NEW.tbl, NEW.item,
                CASE WHEN json_typeof(v -> cfg.ts_field) = 'number'
                    THEN (v ->> cfg.ts_field)::double precision END,
                to_tsvector('simple', left(v ->> cfg.text_field, {MAX_INDEXED_CHARS})));
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER rows_search AFTER INSERT OR UPDATE OR DELETE ON {s}.rows
    FOR EACH ROW EXECUTE FUNCTION {s}.search_index();
"""


SEARCH_V2 = search_v2("synced_store")


async def configure(
    conn: Conn, schema: str, inst: int, tables: Mapping[str, tuple[str, str | None]]
) -> list[str]:
    """See storage/base.py's ``WriterTx.configure_search`` (inside the caller's transaction;
    raises driver errors)."""
    s = schema
    have = {
        r[0]: (r[1], r[2])
        for r in await conn.fetch(
            f"SELECT tbl, text_field, ts_field FROM {s}.search_tables WHERE inst = $1", inst
        )
    }
    for t, fields in have.items():
        if tables.get(t) != fields:
            await conn.execute(
                f"DELETE FROM {s}.search_tables WHERE inst = $1 AND tbl = $2", inst, t
            )
            await conn.execute(f"DELETE FROM {s}.search_docs WHERE inst = $1 AND tbl = $2", inst, t)
    built = []
    for t, (text, stamp) in tables.items():
        if have.get(t) == (text, stamp):
            continue
        await conn.execute(
            f"INSERT INTO {s}.search_tables VALUES ($1, $2, $3, $4)", inst, t, text, stamp
        )
        await conn.execute(
            f"INSERT INTO {s}.search_docs SELECT inst, ns, tbl, item, "
            "CASE WHEN json_typeof(value::json -> $4) = 'number' "
            "THEN (value::json ->> $4)::double precision END, "
            f"to_tsvector('simple', left(value::json ->> $3, {MAX_INDEXED_CHARS})) "
            f"FROM {s}.rows WHERE inst = $1 AND tbl = $2 AND NOT deleted "
            "AND json_typeof(value::json -> $3) = 'string'",
            inst,
            t,
            text,
            stamp,
        )
        built.append(t)
    return built


async def search(
    conn: Conn,
    schema: str,
    inst: int,
    table: str,
    words: Sequence[str],
    namespaces: Sequence[str],
    limit: int,
    *,
    newest_first: bool,
) -> list[SearchHit]:
    """Live rows of ``table`` in ``namespaces`` holding every word (``plainto_tsquery``: the
    words are text, never tsquery syntax), newest first (no score) or by ``ts_rank``. Raises
    driver errors."""
    if not namespaces:
        return []
    s = schema
    if newest_first:
        order, score = "d.ts DESC NULLS LAST, d.item DESC", "NULL::float8"
    else:
        order, score = "ts_rank(d.tsv, q) DESC, d.item DESC", "ts_rank(d.tsv, d.q)::float8"
    # Ordered and cut to ``limit`` on the index alone; only those rows are then read.
    rows = await conn.fetch(
        f"SELECT d.ns, d.item, r.sk, r.value, {score} "
        "FROM (SELECT d.*, q FROM "
        f"{s}.search_docs d, plainto_tsquery('simple', $4) q "
        "WHERE d.inst = $1 AND d.tbl = $2 AND d.ns = ANY($3::text[]) AND d.tsv @@ q "
        f"ORDER BY {order} LIMIT $5) d "
        f"JOIN {s}.rows r "
        "ON r.inst = d.inst AND r.ns = d.ns AND r.tbl = d.tbl AND r.item = d.item "
        f"ORDER BY {order.replace('d.tsv, q', 'd.tsv, d.q')}",
        inst,
        table,
        list(namespaces),
        " ".join(words),
        limit,
    )
    loads = orjson.loads
    return [
        SearchHit(r[0], r[1], r[2], loads(r[3]), None if r[4] is None else float(r[4]))
        for r in rows
    ]
