"""asyncpg against psycopg 3 (async) on the statements the PostgreSQL backend runs.

The choice of driver (docs/topics/design.md) rests on these numbers: a point read (the
writer's lock and version read), one upsert per row inside a transaction (a batch of
mutations, row by row), the same rows as one ``executemany`` (the backend's buffered writes),
and a NOTIFY reaching a listener on another connection. Run::

    python -m benchmarks.pg_drivers [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

psycopg is not a dependency of synced-store; without it only asyncpg's numbers are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
ROWS = 100
ROUNDS = 60

_DDL = (
    "CREATE TABLE t (inst text, ns text, tbl text, item text, sk text, value text, "
    "version bigint, PRIMARY KEY (inst, ns, tbl, item))"
)
_UPSERT_PG = (
    "INSERT INTO t VALUES ($1, '', 'items', $2, '', $3, $4) ON CONFLICT (inst, ns, tbl, item) "
    "DO UPDATE SET value = excluded.value, version = excluded.version"
)
_UPSERT_PS = _UPSERT_PG.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s")
_UPSERT_PS = _UPSERT_PS.replace("$4", "%s")
VALUE = '{"text":"' + "x" * 100 + '","n":1}'


async def _timed(n: int, fn: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await fn(i)
        out.append(time.perf_counter() - t)
    return out


def _fmt(name: str, samples: list[float], per: int = 1) -> str:
    med = statistics.median(samples)
    p99 = sorted(samples)[int(len(samples) * 0.99) - 1]
    return (
        f"  {name:<34} median {med * 1e6 / per:8.1f} µs/row  p99 {p99 * 1e6 / per:8.1f} µs/row"
        f"  ({per / med:,.0f} rows/s)"
    )


async def bench_asyncpg(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    other = await asyncpg.connect(dsn)
    out = ["asyncpg " + asyncpg.__version__]
    try:
        await conn.execute(_DDL)
        out.append(
            _fmt("point read", await _timed(2000, lambda i: conn.fetchval("SELECT $1::int", i)))
        )

        async def per_row(i: int) -> None:
            async with conn.transaction():
                for r in range(ROWS):
                    await conn.execute(_UPSERT_PG, "a", f"r{r}", VALUE, i)

        out.append(_fmt(f"upsert per row, {ROWS}/tx", await _timed(ROUNDS, per_row), ROWS))

        async def many(i: int) -> None:
            async with conn.transaction():
                await conn.executemany(_UPSERT_PG, [("b", f"r{r}", VALUE, i) for r in range(ROWS)])

        out.append(_fmt(f"executemany, {ROWS}/tx", await _timed(ROUNDS, many), ROWS))
        got: asyncio.Queue[float] = asyncio.Queue()
        await other.add_listener("bench", lambda *a: got.put_nowait(time.perf_counter()))

        async def notify(i: int) -> None:
            await conn.execute("SELECT pg_notify('bench', $1)", str(i))
            await got.get()

        out.append(_fmt("NOTIFY to a listener", await _timed(500, notify)))
    finally:
        await conn.close()
        await other.close()
    return out


async def bench_psycopg(dsn: str) -> list[str]:
    try:
        import psycopg
    except ImportError:
        return ["psycopg: not installed (pip install 'psycopg[binary]')"]
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    other = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    out = [f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})"]
    try:
        await conn.execute(_DDL.replace("CREATE TABLE t", "CREATE TABLE t2"))
        upsert = _UPSERT_PS.replace("INTO t ", "INTO t2 ")

        async def read(i: int) -> None:
            cur = await conn.execute("SELECT %s::int", (i,), prepare=True)
            await cur.fetchone()

        out.append(_fmt("point read", await _timed(2000, read)))

        async def per_row(i: int) -> None:
            async with conn.transaction():
                for r in range(ROWS):
                    await conn.execute(upsert, ("a", f"r{r}", VALUE, i), prepare=True)

        out.append(_fmt(f"upsert per row, {ROWS}/tx", await _timed(ROUNDS, per_row), ROWS))

        async def many(i: int) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(upsert, [("b", f"r{r}", VALUE, i) for r in range(ROWS)])

        out.append(_fmt(f"executemany, {ROWS}/tx", await _timed(ROUNDS, many), ROWS))
        await other.execute("LISTEN bench")
        gen = other.notifies()

        async def notify(i: int) -> None:
            await conn.execute("SELECT pg_notify('bench', %s)", (str(i),))
            await anext(gen)

        out.append(_fmt("NOTIFY to a listener", await _timed(500, notify)))
    finally:
        await conn.close()
        await other.close()
    return out


async def main(dsn: str) -> None:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    target = dsn.rsplit("/", 1)[0] + "/" + name
    try:
        for fn in (bench_asyncpg, bench_psycopg):
            for line in await fn(target):
                print(line)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=DSN)
    asyncio.run(main(p.parse_args().dsn))
