"""A tiny app for the browser tests of the value-depth limit (shipped to the page as is).

``put`` stores its ``value`` (so the args nest one level more than the value); ``nest`` builds
a value ``depth`` levels deep in the mutator itself (so only the row value is deep).
Imports only pydantic and synced_store: Pyodide runs these mutators.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, JsonValue

from synced_store import define_backend_config, define_schema, table


class Put(BaseModel):
    key: str
    value: JsonValue


class Nest(BaseModel):
    key: str
    depth: int


schema = define_schema(
    schema_version=1,
    tables={"docs": table()},
    mutators={"put": {"input": Put}, "nest": {"input": Nest}},
)


def nest(depth: int) -> Any:
    """``depth`` objects and arrays inside one another around 1."""
    v: Any = 1
    for i in range(depth):
        v = {"a": v} if i % 2 else [v]
    return v


async def put(ctx: Any, inp: Put) -> None:
    await ctx.table("docs").set(inp.key, inp.value)


async def nest_value(ctx: Any, inp: Nest) -> None:
    await ctx.table("docs").set(inp.key, nest(inp.depth))


backend = define_backend_config(schema=schema, mutators={"put": put, "nest": nest_value})
