"""Searching searchable tables: the ``$search`` built-in query and ``ctx.search`` in actions.

Both read committed rows through the store's full-text index (storage/sqlite_search.py,
storage/postgres_search.py) and apply the visibility of a pull: the public rows and the
user's own private rows (``u:<user>``), never another user's private rows and never
server-only rows. Results (at most :data:`~synced_store.core.search.MAX_LIMIT`) come newest
first when the table declares a ``timestamp_field``, else by relevance; each is a dict
``{"key", "sort_key", "value", "private", "score"}`` (see docs/api.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..core.keys import PUBLIC, private_ns
from ..core.search import DEFAULT_LIMIT, check_limit, parse_query
from ..errors import SyncedStoreError, ValidationError
from ..schema import Schema
from ..storage.search_index import SearchHit
from . import queries

if TYPE_CHECKING:
    from .instance import Instance
    from .session import Session

__all__ = ["SEARCH_QUERY", "Searcher", "search_config", "search_rows", "visible_namespaces"]

#: The built-in query's name.
SEARCH_QUERY = "$search"
_INPUT_KEYS = frozenset({"table", "query", "limit"})


class Searcher(Protocol):
    """What a search reads through: a committed reader's ``search`` (storage/base.py)."""

    async def search(
        self,
        table: str,
        words: Sequence[str],
        namespaces: Sequence[str],
        limit: int,
        *,
        newest_first: bool,
    ) -> list[SearchHit]: ...


def search_config(schema: Schema) -> dict[str, tuple[str, str | None]]:
    """``{table: (text field, timestamp field)}`` of the schema's searchable tables (what the
    server hands to ``WriterTx.configure_search`` when it opens an instance)."""
    return {
        name: (t.searchable.text_field, t.searchable.timestamp_field)
        for name, t in schema.tables.items()
        if t.searchable is not None
    }


def visible_namespaces(user_id: str) -> list[str]:
    """The namespaces a pull of ``user_id`` reads: public, and the user's private rows."""
    try:
        return [PUBLIC, private_ns(user_id)]
    except SyncedStoreError:  # not a user id private rows can have: public rows only
        return [PUBLIC]


async def search_rows(
    reader: Searcher,
    schema: Schema,
    user_id: str,
    table: Any,
    query: Any,
    limit: Any = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Rows of searchable ``table`` that ``user_id`` may see and whose text holds every word
    of ``query``. Raises :class:`ValidationError` (or ``UnknownNameError``) for a bad table,
    query or limit."""
    if not isinstance(table, str):
        raise ValidationError("the table to search must be named by a string")
    tdef = schema.table_def(table)
    if tdef.searchable is None:
        raise ValidationError(f"table {table!r} is not searchable")
    words = parse_query(query)
    n = check_limit(limit)
    hits = await reader.search(
        table,
        words,
        visible_namespaces(user_id),
        n,
        newest_first=tdef.searchable.timestamp_field is not None,
    )
    return [
        {
            "key": h.item,
            "sort_key": h.sort_key,
            "value": h.value,
            "private": h.ns != PUBLIC,
            "score": h.score,
        }
        for h in hits
    ]


@queries.register(SEARCH_QUERY)
async def search_query(inst: Instance, session: Session, input: Any) -> Any:
    """``$search`` with input ``{"table": str, "query": str, "limit": int (1-100, default
    20)}``: a list of result dicts, as the session's user may see them."""
    if not isinstance(input, dict) or not set(input) <= _INPUT_KEYS:
        raise ValidationError(
            '$search takes {"table": str, "query": str, "limit": int} (limit optional)'
        )
    await inst.search_index.catch_up()  # every commit before this search is indexed
    reader = inst.store.reader()
    try:
        return await search_rows(
            reader,
            inst.config.schema,
            session.user_id,
            input.get("table"),
            input.get("query"),
            input.get("limit", DEFAULT_LIMIT),
        )
    finally:
        await reader.close()
