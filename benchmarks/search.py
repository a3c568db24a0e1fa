"""Search latency over a big room: the full-text index against a LIKE scan of the same rows.

    .venv/bin/python -m benchmarks.search [--messages 1000000] [--queries 200] [--write-doc]

Builds one SQLite instance of ``--messages`` chat messages directly through the storage layer
(one writer transaction per 20,000 rows; 10 % of them private rows of one of 20 users, 1 %
server-only), words drawn from a Zipf-like vocabulary of 20,000 words. It then:

* indexes the stored rows (``configure_search``: what a server does the first time a schema
  declares the table searchable) and times it;
* times ``search_rows`` (the code behind ``$search`` and ``ctx.search``: parse, visibility,
  the FTS5 query, JSON values) for queries of a rare, a middling and a common word and of two
  words, newest first, limit 20, as a random user; p50 / p95 per kind;
* the baseline, in the same run on the same file: raw ``sqlite3`` ``LIKE '%word%'`` over the
  message text (what a search without an index does), same visibility, order and limit;
* what the index costs a writer: per-row write time into a searchable table against a plain
  one (20,000 rows each, one transaction).

``--postgres N`` runs the same queries over N messages of the same room on PostgreSQL (a
throwaway database on the local server). Prints a table; ``--write-doc`` replaces the
``search`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from benchmarks.common import latency_stats, progress  # noqa: E402
from benchmarks.sections import run_facts, write_section  # noqa: E402
from synced_store import define_schema, table  # noqa: E402
from synced_store.server.search import search_config, search_rows  # noqa: E402
from synced_store.storage.base import InstanceStore  # noqa: E402
from synced_store.storage.sqlite import SqliteInstanceStore  # noqa: E402
from synced_store.types import RowKey  # noqa: E402


class Message(BaseModel):
    text: str
    author: str
    createdAt: float


SCHEMA = define_schema(
    1,
    tables={
        "messages": table(
            Message, searchable={"text_field": "text", "timestamp_field": "createdAt"}
        ),
        "plain": table(Message),
    },
)
VOCAB = 20_000
USERS = [f"user{i}" for i in range(20)]
BATCH = 20_000


def word(i: int) -> str:
    """The ``i``-th word of the vocabulary: letters only, distinct."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ""
    n = i + 26 * 26
    while n:
        n, d = divmod(n, 26)
        out = letters[d] + out
    return out


def make_rows(n: int, rng: random.Random) -> Any:
    cum = list(itertools.accumulate(1 / (r + 1) for r in range(VOCAB)))
    words = [word(i) for i in range(VOCAB)]
    for i in range(n):
        k = rng.randint(5, 20)
        text = " ".join(rng.choices(words, cum_weights=cum, k=k))
        u = rng.random()
        ns = "s" if u < 0.01 else (f"u:{rng.choice(USERS)}" if u < 0.11 else "")
        value = {"text": text, "author": rng.choice(USERS), "createdAt": 1.7e12 + i}
        yield RowKey(ns, "messages", f"m{i:08d}"), f"{i:012d}", orjson.dumps(value)


async def build(path: Path, n: int) -> tuple[float, float]:
    """Write ``n`` messages, then index them; ``(write seconds, index seconds)``."""
    store = SqliteInstanceStore(path)
    rng = random.Random(12)
    t0 = time.perf_counter()
    rows = make_rows(n, rng)
    done = 0
    while done < n:
        tx = await store.begin()
        v = tx.version + 1
        for _ in range(min(BATCH, n - done)):
            key, sk, data = next(rows)
            await tx.write(key, sk, data, v)
            done += 1
        await tx.commit(v)
        if done % 200_000 == 0:
            progress(f"  {done:,} messages written")
    t1 = time.perf_counter()
    tx = await store.begin()
    await tx.configure_search(search_config(SCHEMA))
    await tx.commit(tx.version)
    t2 = time.perf_counter()
    await store.close()
    return t1 - t0, t2 - t1


def frequencies(path: Path, sample: int = 20_000) -> dict[str, int]:
    """How many indexed rows hold each word, estimated from the first rows' text."""
    conn = sqlite3.connect(path)
    counts: dict[str, int] = {}
    for (text,) in conn.execute(
        "SELECT json_extract(value, '$.text') FROM rows WHERE tbl = 'messages' LIMIT ?",
        (sample,),
    ):
        for w in set(text.split()):
            counts[w] = counts.get(w, 0) + 1
    conn.close()
    return counts


def pick_queries(counts: dict[str, int], rng: random.Random, k: int) -> dict[str, list[str]]:
    by = sorted(counts, key=counts.__getitem__)
    rare = [w for w in by if counts[w] == 1] or by[:100]
    mid = by[len(by) * 9 // 10 : len(by) * 95 // 100] or by
    common = by[-20:]
    return {
        "rare word": [rng.choice(rare) for _ in range(k)],
        "middling word": [rng.choice(mid) for _ in range(k)],
        "common word": [rng.choice(common) for _ in range(k)],
        "two words": [f"{rng.choice(common)} {rng.choice(mid)}" for _ in range(k)],
    }


async def time_index(store: InstanceStore, queries: list[str], rng: random.Random) -> Any:
    reader = store.reader()
    samples, hits = [], 0
    try:
        for q in queries:
            user = rng.choice(USERS)
            t = time.perf_counter()
            got = await search_rows(reader, SCHEMA, user, "messages", q, 20)
            samples.append((time.perf_counter() - t) * 1000)
            hits += len(got)
    finally:
        await reader.close()
    return latency_stats(samples), hits / max(1, len(queries))


LIKE = (
    "SELECT item, value FROM rows WHERE tbl = 'messages' AND ns IN ('', ?) AND deleted = 0 "
    "AND json_extract(value, '$.text') LIKE ? "
    "ORDER BY json_extract(value, '$.createdAt') DESC LIMIT 20"
)


def time_like(path: Path, queries: list[str], rng: random.Random) -> Any:
    conn = sqlite3.connect(path)
    samples = []
    for q in queries:
        user = rng.choice(USERS)
        pattern = "%" + "%".join(q.split()) + "%"
        t = time.perf_counter()
        rows = conn.execute(LIKE, (f"u:{user}", pattern)).fetchall()
        [orjson.loads(v) for _, v in rows]
        samples.append((time.perf_counter() - t) * 1000)
    conn.close()
    return latency_stats(samples)


async def write_cost(path: Path, n: int = 20_000) -> dict[str, float]:
    """Microseconds per row written in one transaction, searchable table against plain."""
    store = SqliteInstanceStore(path)
    tx = await store.begin()
    await tx.configure_search(search_config(SCHEMA))
    await tx.commit(tx.version)
    rng = random.Random(5)
    out = {}
    for tbl in ("plain", "messages"):
        rows = [(k._replace(table=tbl, item="w" + k.item), sk, d) for k, sk, d in make_rows(n, rng)]
        tx = await store.begin()
        v = tx.version + 1
        t = time.perf_counter()
        for key, sk, data in rows:
            await tx.write(key, sk, data, v)
        await tx.commit(v)
        out[tbl] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()  # the queued rows indexed, as the server does (search_indexer.py)
    more = True
    while more:
        tx = await store.begin()
        more = await tx.index_search()
        await tx.commit(tx.version)
    out["indexing"] = (time.perf_counter() - t) / n * 1e6
    await store.close()
    return out


PG_LIKE = (
    "SELECT item, value FROM synced_store.rows WHERE inst = $1 AND tbl = 'messages' "
    "AND ns = ANY($2::text[]) AND NOT deleted AND (value::json ->> 'text') LIKE $3 "
    "ORDER BY (value::json ->> 'createdAt')::float8 DESC LIMIT 20"
)


async def postgres_run(
    n: int, kinds: dict[str, list[str]], like_queries: int
) -> tuple[float, float, list[tuple[str, Any, Any]]]:
    """The same room and queries on PostgreSQL (a throwaway database on the local server):
    ``(write s, index s, [(kind, index stats, LIKE stats)])``."""
    import asyncpg

    from synced_store.storage.postgres import PostgresBackend
    from synced_store.testing.postgres import temporary_database

    async with temporary_database() as dsn:
        storage = PostgresBackend(dsn)
        await storage.start()
        store = await storage.open_instance("room")
        rng = random.Random(12)
        t0 = time.perf_counter()
        rows, done = make_rows(n, rng), 0
        while done < n:
            tx = await store.begin()
            v = tx.version + 1
            for _ in range(min(BATCH, n - done)):
                key, sk, data = next(rows)
                await tx.write(key, sk, data, v)
                done += 1
            await tx.commit(v)
        t1 = time.perf_counter()
        tx = await store.begin()
        await tx.configure_search(search_config(SCHEMA))
        await tx.commit(tx.version)
        t2 = time.perf_counter()
        progress(f"PostgreSQL: written in {t1 - t0:.1f} s, indexed in {t2 - t1:.1f} s")
        conn = await asyncpg.connect(dsn)
        await conn.execute("ANALYZE")
        inst = await conn.fetchval("SELECT key FROM synced_store.instances WHERE id = 'room'")
        out = []
        for kind, qs in kinds.items():
            progress(f"  PostgreSQL {kind}")
            idx, _ = await time_index(store, qs, random.Random(1))
            r = random.Random(1)
            samples = []
            for q in qs[:like_queries]:
                pattern = "%" + "%".join(q.split()) + "%"
                t = time.perf_counter()
                got = await conn.fetch(PG_LIKE, inst, ["", f"u:{r.choice(USERS)}"], pattern)
                [orjson.loads(row[1]) for row in got]
                samples.append((time.perf_counter() - t) * 1000)
            out.append((kind, idx, latency_stats(samples)))
        await conn.close()
        await store.close()
        await storage.close()
    return t1 - t0, t2 - t1, out


def fmt(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.0f}"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200, help="index queries per kind")
    ap.add_argument("--like-queries", type=int, default=10, help="LIKE scans per kind")
    ap.add_argument("--dir", type=Path, default=None, help="where the file goes (default: tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the file (its path is printed)")
    ap.add_argument(
        "--postgres",
        type=int,
        default=0,
        metavar="N",
        help="also N messages on PostgreSQL (a throwaway database on the local server)",
    )
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    where = Path(tempfile.mkdtemp(dir=args.dir) if args.keep else tmp.name)
    path = where / "room.sqlite3"
    progress(f"writing {args.messages:,} messages")
    write_s, index_s = await build(path, args.messages)
    size = path.stat().st_size  # the store checkpointed its log when it closed
    progress(f"written in {write_s:.1f} s, indexed in {index_s:.1f} s ({size / 2**20:.0f} MiB)")
    rng = random.Random(7)
    counts = frequencies(path)
    kinds = pick_queries(counts, rng, args.queries)
    store = SqliteInstanceStore(path)
    rows = []
    for kind, qs in kinds.items():
        progress(f"  {kind}")
        idx, avg_hits = await time_index(store, qs, random.Random(1))
        like = time_like(path, qs[: args.like_queries], random.Random(1))
        share = sum(counts.get(w, 0) for w in qs[0].split()[:1]) / 20_000
        rows.append((kind, share, avg_hits, idx, like))
    await store.close()
    cost = await write_cost(Path(tmp.name) / "writes.sqlite3")
    pg = await postgres_run(args.postgres, kinds, args.like_queries) if args.postgres else None
    if args.keep:
        print(f"kept {path}")
    else:
        tmp.cleanup()

    header = (
        "| query | rows holding the (first) word | hits (of 20) | index p50 ms | index p95 ms "
        "| LIKE scan p50 ms | LIKE p95 ms | LIKE / index (p50) |"
    )
    lines = [header, "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for kind, share, hits, idx, like in rows:
        lines.append(
            f"| {kind} | {share:.3%} | {hits:.1f} | {fmt(idx.p50)} | {fmt(idx.p95)} "
            f"| {fmt(like.p50)} | {fmt(like.p95)} | {like.p50 / idx.p50:.0f}x |"
        )
    table_md = "\n".join(lines)
    pg_md = ""
    if pg is not None:
        pg_lines = [
            "| query | index p50 ms | index p95 ms | LIKE scan p50 ms | LIKE p95 ms "
            "| LIKE / index (p50) |",
            "|---|--:|--:|--:|--:|--:|",
        ]
        for kind, idx, like in pg[2]:
            pg_lines.append(
                f"| {kind} | {fmt(idx.p50)} | {fmt(idx.p95)} | {fmt(like.p50)} "
                f"| {fmt(like.p95)} | {like.p50 / idx.p50:.0f}x |"
            )
        pg_md = "\n".join(
            [
                f"PostgreSQL ({args.postgres:,} messages of the same room, the same queries; "
                f"written in {pg[0]:.1f} s, indexed in {pg[1]:.1f} s; `tsvector` + GIN, "
                "baseline `LIKE` on `value::json ->> 'text'` through asyncpg):",
                "",
                *pg_lines,
            ]
        )
    print()
    print(f"{args.messages:,} messages, file {size / 2**20:.0f} MiB")
    print(f"written in {write_s:.1f} s; indexed (configure_search) in {index_s:.1f} s")
    print(table_md)
    print(f"write cost per row: searchable {cost['messages']:.1f} us, plain {cost['plain']:.1f} us")
    if pg_md:
        print(pg_md)
    if args.write_doc:
        cmd = f"python -m benchmarks.search --messages {args.messages} --write-doc"
        if args.postgres:
            cmd = cmd.replace(" --write-doc", f" --postgres {args.postgres} --write-doc")
        md = "\n".join(
            [
                "## Search (searchable tables: SQLite FTS5, PostgreSQL tsvector + GIN)",
                "",
                run_facts(cmd),
                "",
                f"One room of {args.messages:,} messages written through the storage layer "
                "(10 % private rows of 20 users, 1 % server-only; 5-20 words each from a "
                f"Zipf-like vocabulary of {VOCAB:,}), file {size / 2**20:.0f} MiB with its "
                f"index. Indexing the stored rows (`configure_search`, what a server does the "
                f"first time the schema declares the table searchable) took {index_s:.1f} s "
                f"(writing them: {write_s:.1f} s).",
                "",
                f"Index: `search_rows` (the code behind `$search` and `ctx.search`), newest "
                f"first, limit 20, as a random user, {args.queries} queries per kind. "
                f"Baseline in the same run on the same file: raw `sqlite3` `LIKE '%word%'` on "
                f"the message text with the same visibility, order and limit "
                f"({args.like_queries} per kind). Neither includes the network round trip of "
                "`store.search` (a WebSocket frame each way, about a millisecond here) nor the "
                "read connection `$search` opens per call (about 0.5 ms on SQLite).",
                "",
                "Newest first, SQLite takes the newest 2,000 visible rows from an index in "
                "time order and asks FTS5 once which of them match (their rowid range): a "
                "common word is answered there; a rarer one has few enough matches to order "
                "them all. (Ordering every match, the first version took 259 ms p50 and "
                "1.2 s p95 for a common word at this size.) PostgreSQL's planner makes the "
                "same choice between the GIN index and a b-tree in result order.",
                "",
                table_md,
                "",
                f"What the index costs a writer: {cost['messages']:.1f} µs per row written into "
                f"the searchable table against {cost['plain']:.1f} µs into a plain one (20,000 "
                "rows in one transaction; the trigger queues the row, and rows of other tables "
                f"cost it one lookup), then {cost['indexing']:.1f} µs per row to index the "
                "queued rows (`index_search`, in batches of 500, once per row however often it "
                "was written: server/search_indexer.py).",
                *(["", pg_md] if pg_md else []),
            ]
        )
        write_section("search", md)
        progress("wrote the search section of docs/benchmarks.md")


if __name__ == "__main__":
    asyncio.run(main())
