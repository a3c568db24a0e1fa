"""Full-text search of searchable tables: the query language and its bounds (pure; the index
lives in storage/, the ``$search`` query in server/search.py).

A query is **plain words**: every run of letters and digits in it is one word; everything
else (quotes, ``*``, ``-``, ``:``, parentheses, ``AND``/``OR``/``NOT`` as operators) is a
separator or an ordinary word, never syntax. A row matches when its text holds every word
(case- and accent-insensitive, whole words; the backend's tokenizer decides what a word is).
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ValidationError

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "MAX_TERMS",
    "check_limit",
    "parse_query",
    "search_args",
]

#: Longest query text accepted, in characters.
MAX_QUERY_CHARS = 256
#: Most words in one query.
MAX_TERMS = 16
#: Results of one search at most, and by default.
MAX_LIMIT = 100
DEFAULT_LIMIT = 20

_WORD = re.compile(r"[^\W_]+")


def parse_query(query: Any) -> list[str]:
    """The words of a query (lower-cased, in order, duplicates dropped); raises
    :class:`ValidationError` for a query that is not a string, too long, has no word or too
    many."""
    if not isinstance(query, str):
        raise ValidationError(f"a search query is a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationError(
            f"a search query has at most {MAX_QUERY_CHARS} characters (got {len(query)})"
        )
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    if not words:
        raise ValidationError("a search query needs at least one word (letters or digits)")
    if len(words) > MAX_TERMS:
        raise ValidationError(f"a search query has at most {MAX_TERMS} words (got {len(words)})")
    return words


def check_limit(limit: Any) -> int:
    """``limit`` if it is an integer in 1..:data:`MAX_LIMIT`, else :class:`ValidationError`."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"a search limit is an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def search_args(schema: Any, table: str, query: str, limit: int) -> dict[str, Any]:
    """The ``$search`` query's input for a client's ``search(table, query, limit)``, checked
    at once (:class:`ValidationError`: a table that is not searchable, a bad query or limit)."""
    if schema.table_def(table).searchable is None:
        raise ValidationError(f"table {table!r} is not searchable")
    parse_query(query)
    check_limit(limit)
    return {"table": table, "query": query, "limit": limit}
