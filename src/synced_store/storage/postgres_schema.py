"""The PostgreSQL schema: created and upgraded by ``synced-store db upgrade``, checked by a
server at start-up.

Every table lives in the schema ``synced_store`` (so an application's own tables may share
the database). One set of tables holds every instance, keyed by a small integer (``inst``,
from ``instances.key``) rather than the id text:

* ``meta``: the layout's version (``storage_version``), for upgrades and the start-up check;
* ``instances``: id, version, tombstone horizon and schema version of each instance; its row
  is also the instance's lock (``SELECT ... FOR UPDATE`` by the writer);
* ``rows``, ``clients``, ``mutation_errors``, ``jobs``, ``checkpoints``: as in SQLite
  (storage/sqlite.py), plus the instance key, and ``jobs.lease_until`` for claims shared by
  several processes;
* ``search_tables``, ``search_docs`` and the trigger ``rows_search``: the full-text index of
  searchable tables (layout version 2, postgres_search.py).

Keys and names are ``text COLLATE "C"``: scans must order them by code point, as every
client does (a database's default collation would not). Values are ``text``, never
``jsonb``: catch-ups splice the stored bytes into the wire.
"""

from __future__ import annotations

from .postgres_errors import Conn
from .postgres_search import search_v2
from .records import DatabaseSchemaError

__all__ = [
    "SCHEMA",
    "STORAGE_VERSION",
    "DatabaseSchemaError",
    "check_schema",
    "schema_version",
    "upgrade",
]

#: The PostgreSQL schema holding synced-store's tables.
SCHEMA = "synced_store"
#: The layout this code reads and writes; ``db upgrade`` brings a database to it.
STORAGE_VERSION = 2
#: Serializes concurrent ``db upgrade`` runs (an arbitrary advisory lock key).
_UPGRADE_LOCK = 0x5359_4E43

_C = 'text COLLATE "C" NOT NULL'
_V1 = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE {SCHEMA}.meta (key {_C} PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE {SCHEMA}.instances (
    key serial UNIQUE, id {_C} PRIMARY KEY, version bigint NOT NULL DEFAULT 0,
    horizon bigint NOT NULL DEFAULT 0, schema_version integer
);
CREATE TABLE {SCHEMA}.rows (
    inst integer NOT NULL, ns {_C}, tbl {_C}, item {_C}, sk {_C}, value text,
    version bigint NOT NULL, deleted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (inst, ns, tbl, item)
);
CREATE INDEX rows_by_version ON {SCHEMA}.rows (inst, version, ns, tbl, item);
CREATE INDEX rows_in_order ON {SCHEMA}.rows (inst, ns, tbl, sk, item);
CREATE INDEX rows_tombstones ON {SCHEMA}.rows (inst, version) WHERE deleted;
CREATE TABLE {SCHEMA}.clients (
    inst integer NOT NULL, client_id {_C}, user_id {_C}, last_mutation_id bigint NOT NULL,
    version bigint NOT NULL, PRIMARY KEY (inst, client_id)
);
CREATE INDEX clients_by_version ON {SCHEMA}.clients (inst, version);
CREATE INDEX clients_by_user ON {SCHEMA}.clients (inst, user_id);
CREATE TABLE {SCHEMA}.mutation_errors (
    inst integer NOT NULL, client_id {_C}, mutation_id bigint NOT NULL, name text NOT NULL,
    kind text NOT NULL, message text NOT NULL, PRIMARY KEY (inst, client_id, mutation_id)
);
CREATE TABLE {SCHEMA}.jobs (
    id bigserial PRIMARY KEY, inst integer NOT NULL, name text NOT NULL, input text NOT NULL,
    user_id {_C}, status text NOT NULL, attempts integer NOT NULL DEFAULT 0,
    next_run_at double precision NOT NULL DEFAULT 0,
    lease_until double precision NOT NULL DEFAULT 0, last_error text, output text,
    created_at double precision NOT NULL, updated_at double precision NOT NULL
);
CREATE INDEX jobs_by_status ON {SCHEMA}.jobs (inst, status, next_run_at);
CREATE INDEX jobs_by_user ON {SCHEMA}.jobs (inst, user_id, status);
CREATE INDEX jobs_unfinished ON {SCHEMA}.jobs (status, next_run_at, lease_until)
    WHERE status IN ('pending', 'running');
CREATE TABLE {SCHEMA}.checkpoints (
    inst integer NOT NULL, at double precision NOT NULL, version bigint NOT NULL,
    PRIMARY KEY (inst, at)
);
"""

#: ``STEPS[v]`` brings a database from layout ``v`` to ``v + 1`` (0: an empty database).
STEPS: dict[int, str] = {0: _V1, 1: search_v2(SCHEMA)}


async def schema_version(conn: Conn) -> int:
    """The layout version of the database (0: no synced-store schema yet)."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{SCHEMA}.meta")
    if not exists:
        return 0
    v = await conn.fetchval(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'storage_version'")
    return 0 if v is None else int(v)


async def check_schema(conn: Conn, where: str) -> None:
    """Raise :class:`DatabaseSchemaError` unless the database's layout is the one this code
    uses (``where`` names the database in the message)."""
    v = await schema_version(conn)
    if v == STORAGE_VERSION:
        return
    if v == 0:
        raise DatabaseSchemaError(
            f"{where} has no synced-store schema: run `synced-store db upgrade DSN` first"
        )
    if v < STORAGE_VERSION:
        raise DatabaseSchemaError(
            f"{where} holds storage schema version {v}; this synced-store uses version "
            f"{STORAGE_VERSION}: run `synced-store db upgrade DSN` (stop older servers first)"
        )
    raise DatabaseSchemaError(
        f"{where} holds storage schema version {v}, newer than this synced-store knows "
        f"({STORAGE_VERSION}): upgrade synced-store on this server"
    )


async def upgrade(conn: Conn) -> tuple[int, int]:
    """Create or upgrade the schema to :data:`STORAGE_VERSION` in one transaction (concurrent
    runs wait for each other). Returns ``(version before, version after)``; raises
    :class:`DatabaseSchemaError` for a database newer than this code."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _UPGRADE_LOCK)
        before = await schema_version(conn)
        if before > STORAGE_VERSION:
            raise DatabaseSchemaError(
                f"the database holds storage schema version {before}, newer than this "
                f"synced-store knows ({STORAGE_VERSION})"
            )
        for v in range(before, STORAGE_VERSION):
            await conn.execute(STEPS[v])
        await conn.execute(
            f"INSERT INTO {SCHEMA}.meta VALUES ('storage_version', $1) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            STORAGE_VERSION,
        )
    return before, STORAGE_VERSION
