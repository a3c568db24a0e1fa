"""The end-to-end benchmark app: one table ``msgs`` and two mutators (one row, many rows).

A room of peers/triplit/WORKLOAD.md is one instance (``instance_id`` = room id): "all rows of
``msgs`` where room = R" is the whole ``msgs`` table of instance R.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table


class Msg(BaseModel):
    id: str
    room: str
    client: int
    seq: int
    t: float
    body: str


class InsertMsgs(BaseModel):
    rows: list[Msg]


async def insert_msg(ctx: Any, input: Msg) -> None:
    await ctx.table("msgs").set(input.id, input)


async def insert_msgs(ctx: Any, input: InsertMsgs) -> None:
    t = ctx.table("msgs")
    for row in input.rows:
        await t.set(row.id, row)


schema = define_schema(
    schema_version=1,
    tables={"msgs": {"schema": table(Msg)}},
    mutators={
        "insert_msg": {"description": "insert one row", "input": Msg},
        "insert_msgs": {"description": "insert many rows in one mutation", "input": InsertMsgs},
    },
)
backend = define_backend_config(
    schema=schema, mutators={"insert_msg": insert_msg, "insert_msgs": insert_msgs}
)


def bench_authenticate(token: str | None) -> str | None:
    """The cheapest rule set: every valid token is its own user; all rows are public."""
    return token or None
