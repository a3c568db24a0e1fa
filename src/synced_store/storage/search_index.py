"""What the full-text index of both backends shares (sqlite_search.py, postgres_search.py)."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["MAX_INDEXED_CHARS", "SearchHit"]

#: Characters of a row's text that are indexed (the rest is not searchable).
MAX_INDEXED_CHARS = 65536


class SearchHit(NamedTuple):
    """One matching row, as ``CommittedReader.search`` returns it."""

    ns: str
    item: str
    sort_key: str
    value: Any
    #: Relevance, higher is better (its scale depends on the backend); None when ordered
    #: newest first.
    score: float | None
