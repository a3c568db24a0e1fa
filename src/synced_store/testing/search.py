"""Full-text search over an in-memory store: what ``ctx.search`` reads in the local runner
(:mod:`synced_store.testing.local_runner`), matching the server's rules closely enough for
tests: whole words, case- and accent-insensitive, every word must occur."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from ..core.store import MemoryStore
from ..schema import Schema
from ..storage.search_index import MAX_INDEXED_CHARS, SearchHit

__all__ = ["MemorySearchReader", "words_of"]

_WORD = re.compile(r"[^\W_]+")


def words_of(text: str) -> list[str]:
    """The words of ``text`` as the index sees them (lower case, accents removed)."""
    plain = unicodedata.normalize("NFKD", text[:MAX_INDEXED_CHARS].casefold())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return _WORD.findall(plain)


class MemorySearchReader:
    """The ``search`` of a committed reader over a :class:`MemoryStore`."""

    def __init__(self, store: MemoryStore, schema: Schema) -> None:
        self._store = store
        self._schema = schema

    async def search(
        self,
        table: str,
        words: Sequence[str],
        namespaces: Sequence[str],
        limit: int,
        *,
        newest_first: bool,
    ) -> list[SearchHit]:
        spec = self._schema.table_def(table).searchable
        if spec is None:
            return []
        wanted = {w for q in words for w in words_of(q)}
        found: list[tuple[float | None, float, SearchHit]] = []
        for key, sk, value in self._store.rows():
            text = value.get(spec.text_field) if isinstance(value, dict) else None
            if key.table != table or key.ns not in namespaces or not isinstance(text, str):
                continue
            have = words_of(text)
            if not wanted <= set(have):
                continue
            ts = value.get(spec.timestamp_field) if spec.timestamp_field else None
            stamp = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
            score = float(sum(have.count(w) for w in wanted)) / len(have)
            found.append((stamp, score, SearchHit(key.ns, key.item, sk, value, score)))
        if newest_first:
            found.sort(key=lambda f: (f[0] is None, -(f[0] or 0.0)))
            return [h._replace(score=None) for _, _, h in found[:limit]]
        found.sort(key=lambda f: -f[1])
        return [h for _, _, h in found[:limit]]
