"""The read tools: ``get``, ``scan`` and ``search`` over the rows a user may see.

Each takes the tool's arguments (already a dict) and a read context, and returns a JSON object.
They read public rows, or with ``"private": true`` the caller's own private rows; never another
user's private rows and never server-only rows. Results are bounded (:data:`MAX_ROWS` rows,
about :data:`MAX_RESULT_BYTES` of values) so an agent's context is not flooded; ``scan`` returns
a ``next`` cursor to continue.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core

from ..core.context import ReadContext, TableHandle
from ..errors import ValidationError
from ..schema import Schema
from ..types import EntryKey

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_RESULT_BYTES",
    "MAX_ROWS",
    "READ_TOOLS",
    "read_tool_schema",
    "run_read",
]

READ_TOOLS = ("get", "scan", "search")
DEFAULT_LIMIT = 50
MAX_ROWS = 200
MAX_RESULT_BYTES = 256 * 1024
#: Rows a ``search`` looks at before giving up (it scans; there is no text index).
MAX_SEARCHED_ROWS = 100_000

_PRIVATE = {
    "type": "boolean",
    "default": False,
    "description": "Read your own private rows of the table instead of the shared ones.",
}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_ROWS, "default": DEFAULT_LIMIT}


def read_tool_schema(op: str, tables: Sequence[str]) -> dict[str, Any]:
    """The input schema of read tool ``op`` over ``tables``."""
    table = {"type": "string", "enum": list(tables), "description": "The table to read."}
    props: dict[str, Any]
    if op == "get":
        props = {
            "table": table,
            "key": {"type": "string", "minLength": 1, "description": "The row's item key."},
            "private": _PRIVATE,
        }
        required = ["table", "key"]
    elif op == "scan":
        props = {
            "table": table,
            "prefix": {"type": "string", "description": "Only rows whose item key starts so."},
            "limit": _LIMIT,
            "after": {
                "type": "object",
                "description": "Continue after this row (the `next` of a previous scan).",
                "properties": {"sortKey": {"type": "string"}, "key": {"type": "string"}},
                "required": ["sortKey", "key"],
                "additionalProperties": False,
            },
            "reverse": {"type": "boolean", "default": False, "description": "Last rows first."},
            "private": _PRIVATE,
        }
        required = ["table"]
    elif op == "search":
        props = {
            "table": table,
            "query": {"type": "string", "minLength": 1, "description": "Text to look for."},
            "limit": _LIMIT,
        }
        required = ["table", "query"]
    else:
        raise ValueError(f"unknown read tool {op!r}")
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def _str(args: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    v = args.get(name)
    if v is None and not required:
        return None
    if not isinstance(v, str) or (required and not v):
        raise ValidationError(f"{name!r} must be a non-empty string")
    return v


def _bool(args: Mapping[str, Any], name: str) -> bool:
    v = args.get(name, False)
    if not isinstance(v, bool):
        raise ValidationError(f"{name!r} must be true or false")
    return v


def _limit(args: Mapping[str, Any]) -> int:
    v = args.get("limit", DEFAULT_LIMIT)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_ROWS:
        raise ValidationError(f"'limit' must be an integer from 1 to {MAX_ROWS}")
    return v


def _handle(ctx: ReadContext, table: str, private: bool) -> TableHandle:
    if private:
        return ctx.private_of_user(ctx.user_id).table(table)
    return ctx.table(table)


def _row(ek: EntryKey, value: Any) -> dict[str, Any]:
    return {"key": ek.item_key, "sortKey": ek.sort_key, "value": value}


def _check_args(args: Mapping[str, Any], op: str, tables: Sequence[str]) -> str:
    allowed = set(read_tool_schema(op, tables)["properties"])
    extra = sorted(set(args) - allowed)
    if extra:
        raise ValidationError(f"unexpected argument(s) for {op}: {', '.join(extra)}")
    table = _str(args, "table", required=True)
    assert table is not None
    if table not in tables:
        raise ValidationError(f"table {table!r} is not readable here (tables: {', '.join(tables)})")
    return table


async def run_read(
    op: str, args: Mapping[str, Any], ctx: ReadContext, tables: Sequence[str], schema: Schema
) -> dict[str, Any]:
    """Run read tool ``op`` with ``args`` against ``ctx``; ``tables`` are the ones it may read.

    Raises :class:`~synced_store.errors.ValidationError` for bad arguments."""
    table = _check_args(args, op, tables)
    if op == "get":
        key = _str(args, "key", required=True)
        value = await _handle(ctx, table, _bool(args, "private")).get(key or "")
        return {"table": table, "key": key, "found": value is not None, "value": value}
    if op == "scan":
        return await _scan(ctx, table, args)
    return await _search(ctx, table, args, schema)


async def _scan(ctx: ReadContext, table: str, args: Mapping[str, Any]) -> dict[str, Any]:
    limit = _limit(args)
    after = args.get("after")
    cursor: EntryKey | None = None
    if after is not None:
        if (
            not isinstance(after, Mapping)
            or not isinstance(after.get("sortKey"), str)
            or not isinstance(after.get("key"), str)
        ):
            raise ValidationError('\'after\' must be {"sortKey": str, "key": str}')
        cursor = EntryKey(after["sortKey"], after["key"])
    handle = _handle(ctx, table, _bool(args, "private"))
    entries = await handle.scan(
        prefix=_str(args, "prefix"), limit=limit + 1, cursor=cursor, reverse=_bool(args, "reverse")
    ).entries()
    rows, truncated = _bounded([_row(k, v) for k, v in entries], limit)
    last = rows[-1] if rows else None
    more = truncated and last is not None
    return {
        "table": table,
        "rows": rows,
        "next": {"sortKey": last["sortKey"], "key": last["key"]} if more and last else None,
    }


def _bounded(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """At most ``limit`` rows and about ``MAX_RESULT_BYTES`` of JSON (at least one row);
    True when some were left out."""
    out: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        if len(out) >= limit:
            return out, True
        size += len(pydantic_core.to_json(row))
        if out and size > MAX_RESULT_BYTES:
            return out, True
        out.append(row)
    return out, False


async def _search(
    ctx: ReadContext, table: str, args: Mapping[str, Any], schema: Schema
) -> dict[str, Any]:
    search = schema.table_def(table).searchable
    if search is None:
        raise ValidationError(f"table {table!r} is not searchable")
    query = (_str(args, "query", required=True) or "").casefold()
    limit = _limit(args)
    hits: list[tuple[Any, EntryKey, Any]] = []
    seen = 0
    async for ek, value in ctx.table(table).scan():
        seen += 1
        if seen > MAX_SEARCHED_ROWS:
            break
        text = value.get(search.text_field) if isinstance(value, dict) else None
        if isinstance(text, str) and query in text.casefold():
            stamp = value.get(search.timestamp_field) if search.timestamp_field else None
            hits.append((stamp if isinstance(stamp, int | float) else None, ek, value))
    if search.timestamp_field is not None:  # newest first; rows without a stamp last
        hits.sort(key=lambda h: (h[0] is None, -(h[0] or 0)))
    rows, truncated = _bounded([_row(ek, v) for _, ek, v in hits], limit)
    return {"table": table, "rows": rows, "truncated": truncated or seen > MAX_SEARCHED_ROWS}
