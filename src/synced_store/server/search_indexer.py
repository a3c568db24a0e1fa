"""Keeping an instance's full-text index up to date on a store that defers indexing (SQLite:
storage/sqlite_search.py queues the rows a transaction writes; ``WriterTx.index_search``
indexes them).

Re-indexing a row costs time in the length of its text, so indexing every write of a reply
streamed in hundreds of chunks would cost O(n²). Instead the writer indexes what is queued
:data:`INDEX_DELAY` seconds after a commit first queues rows (so a streaming row is indexed
once per period, not once per chunk), and **before every search**: :meth:`SearchIndexer.catch_up`
returns once every row committed before it was called is indexed, so a search still sees
every commit that came before it (read-your-writes, as a pull).

Indexing runs in the writer's transactions, in batches of ``INDEX_BATCH`` rows (one
transaction each: the writer is never held long), with no new version: clients learn nothing
from it. On a store that indexes every write at once (PostgreSQL) this does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..storage.base import WriterTx
from ..types import RowKey

__all__ = ["INDEX_DELAY", "SearchIndexer"]

log = logging.getLogger("synced_store.server")

#: Seconds from a commit that queues rows for the index to the writer indexing them.
INDEX_DELAY = 5.0

InWriter = Callable[[Callable[[WriterTx], Any]], Awaitable[Any]]


class SearchIndexer:
    """The deferred full-text indexing of one instance (module doc)."""

    def __init__(
        self,
        instance_id: str,
        in_writer: InWriter,
        tables: Iterable[str],
        *,
        enabled: bool,
        delay: float | None = None,
    ) -> None:
        self._instance_id = instance_id
        self._in_writer = in_writer
        self._tables = frozenset(tables) if enabled else frozenset()
        self._delay = INDEX_DELAY if delay is None else delay
        #: The newest version whose commit queued rows, and the version up to which every
        #: queued row is indexed.
        self._queued = 0
        self._indexed = 0
        self._run: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def pending(self) -> bool:
        """True if committed rows wait to be indexed."""
        return self._indexed < self._queued

    def committed(self, version: int, keys: Iterable[RowKey]) -> None:
        """A commit at ``version`` changed ``keys``: note it if one is in a searchable table,
        and have the writer index it soon."""
        tables = self._tables
        if not tables:
            return
        for key in keys:
            if key.table in tables:
                self.queued(version)
                return

    def queued(self, version: int) -> None:
        """Rows committed up to ``version`` may be queued (after a migration, or rows an
        opening found queued)."""
        if not self._tables or self._closed:
            return
        self._queued = max(self._queued, version)
        if self._timer is None and self._run is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.pending and self._run is None and not self._closed:
            self._start()

    def _start(self) -> asyncio.Future[None]:
        """A pass up to the newest version that queued rows (runs after it are not its)."""
        run = self._run = asyncio.ensure_future(self._index_upto(self._queued))
        run.add_done_callback(self._ended)
        return run

    def _ended(self, run: asyncio.Future[None]) -> None:
        """Log a failed pass (retrieving its error: the searches that waited for it may all
        have been cancelled), and have rows committed meanwhile indexed later."""
        if not run.cancelled() and run.exception() is not None:
            log.warning(
                "instance %s: search indexing failed (retried at the next search): %s",
                self._instance_id,
                run.exception(),
            )
        if self.pending and not self._closed:
            self.queued(self._queued)

    async def _index_upto(self, upto: int) -> None:
        """Index the rows queued at versions up to ``upto``, a batch per transaction: rows
        committed during the pass wait for the next one, so heavy writing cannot keep a
        search waiting."""
        try:
            while await self._in_writer(lambda tx: tx.index_search(upto)):
                pass
            self._indexed = max(self._indexed, upto)
        finally:
            self._run = None  # before any waiter resumes: a later call starts a new pass

    async def catch_up(self) -> None:
        """Return once every row committed before the call is indexed (module doc). Raises
        the storage error that stopped the indexing, if one did."""
        target = self._queued
        while self._indexed < target:
            # A pass clears ``_run`` as it ends, so this is never a finished pass.
            await asyncio.shield(self._run or self._start())

    def close(self) -> None:
        """Stop indexing (the instance is closing; what is queued stays in the store and is
        indexed when the instance opens again)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
