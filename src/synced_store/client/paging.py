"""Windowed tables in the asyncio client: paging older rows in, prefix subscriptions that pull
what they lack, and the storage budget.

:class:`WindowedReads` is a base of :class:`~synced_store.client.store.SyncedStoreClient`; the
rules (what a client holds of a windowed table, how a page joins it without a gap or a
duplicate, eviction) are the engine's, in core/window.py. A page is the server's ``$scan``
query (server/windows.py), called like an action over the same connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.keys import PUBLIC, private_ns
from ..errors import SyncedStoreError, ValidationError
from ..types import EntryKey

if TYPE_CHECKING:
    from ..core.client_engine import ClientEngine
    from ..core.window import ClientWindows

__all__ = ["PAGE_ATTEMPTS", "PAGE_BACKOFF", "ScanCallback", "WindowedReads"]

#: How often a page is asked again when rows in it changed while it was in flight.
PAGE_ATTEMPTS = 8
#: Seconds before the second attempt, doubled for each further one (at most 0.2 s): under a
#: burst of writes, the next page waits for it to pass instead of being cut again at once.
PAGE_BACKOFF = 0.005

ScanCallback = Callable[[list[tuple[EntryKey, Any]], dict[str, list[str]]], None]


class WindowedReads:
    """``load_older``, ``subscribe_to_scan_entries`` and ``pull_max_bytes`` of a client."""

    engine: ClientEngine
    _page_locks: dict[tuple[str, str], asyncio.Lock]

    if TYPE_CHECKING:

        async def _query(self, name: str, args: Any) -> Any: ...

        def _after_engine(self) -> None: ...

    def _windows(self, table: str) -> ClientWindows:
        self.engine.schema.table_def(table)
        w = self.engine.windows
        if w is None or table not in w.windows:
            raise ValidationError(f"table {table!r} is not windowed (schema pull_windows)")
        return w

    @property
    def pull_max_bytes(self) -> int:
        """The storage budget of windowed rows, in bytes (past 1.2 x it the oldest rows are
        evicted); settable at run time, e.g. raised before loading more history."""
        w = self.engine.windows
        return 0 if w is None else w.budget

    @pull_max_bytes.setter
    def pull_max_bytes(self, value: int) -> None:
        if not isinstance(value, int) or value < 1024:
            raise ValidationError("pull_max_bytes must be an int of at least 1024")
        if self.engine.windows is not None:
            self.engine.windows.budget = value

    def has_older(self, table: str, *, private: bool = False) -> bool:
        """False once this client holds a windowed table from its first row on."""
        w = self._windows(table)
        ns = private_ns(self.engine.user_id) if private else PUBLIC
        return (ns, table) not in w.complete

    async def load_older(self, table: str, *, limit: int = 50, private: bool = False) -> int:
        """Read up to ``limit`` (1-500) rows of a windowed table older than the oldest this
        client holds from the server and add them; returns how many were added (0: the client
        holds the table from its first row). Needs the connection (:class:`OfflineError`).

        Pages join the rows held without a gap or a duplicate while rows change and new rows
        arrive (core/window.py); concurrent calls for one table run one after the other.
        """
        w = self._windows(table)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500:
            raise ValidationError("load_older: limit must be an int in 1..500")
        ns = private_ns(self.engine.user_id) if private else PUBLIC
        locks = self.__dict__.setdefault("_page_locks", {})
        lock = locks.setdefault((ns, table), asyncio.Lock())
        async with lock:
            for attempt in range(PAGE_ATTEMPTS):
                if attempt:  # rows in the page changed meanwhile: back off, then ask again
                    await asyncio.sleep(min(PAGE_BACKOFF * 2 ** (attempt - 1), 0.2))
                if (ns, table) in w.complete:
                    return 0
                token = w.begin_page(ns, table)
                try:
                    fl = token.floor
                    out = await self._query(
                        "$scan",
                        {
                            "table": table,
                            "private": private,
                            "before": None if fl is None else [fl.sort_key, fl.item_key],
                            "limit": limit,
                        },
                    )
                    added = w.apply_page(token, out["rows"], bool(out["more"]))
                finally:
                    w.end_page()
                self._after_engine()
                if added is not None:
                    return added
        raise SyncedStoreError(f"load_older({table!r}): rows kept changing; try again")

    def subscribe_to_scan_entries(
        self,
        table: str,
        callback: ScanCallback,
        *,
        prefix: str | dict[str, str] | None = None,
        limit: int | None = None,
        reverse: bool = False,
        private: bool = False,
    ) -> Callable[[], None]:
        """``callback(entries, changes)`` with the rows of a scan (the options of
        ``ctx.table(name).scan``: ``reverse=True, limit=50`` is the latest 50) and
        ``{"added": [...], "modified": [...], "removed": [...]}`` item keys since the previous
        call (first call: all added). Returns ``unsubscribe()``.

        On a windowed table, a scan with ``reverse`` and a ``limit`` that finds fewer rows than
        ``limit`` locally pulls older rows from the server (:meth:`load_older`) until it has
        them or the table's first row; the callback then runs again.
        """
        self.engine.schema.table_def(table)
        uid = self.engine.user_id
        w = self.engine.windows
        windowed = w is not None and table in w.windows

        async def scan(ctx: Any) -> list[tuple[EntryKey, Any]]:
            handle = ctx.private_of_user(uid).table(table) if private else ctx.table(table)
            rows: list[tuple[EntryKey, Any]] = await handle.scan(
                prefix=prefix, limit=limit, reverse=reverse
            ).entries()
            return rows

        last: dict[str, Any] = {}
        pulling: list[asyncio.Task[Any]] = []

        def deliver(entries: list[tuple[EntryKey, Any]]) -> None:
            nonlocal last
            now = {ek.item_key: v for ek, v in entries}
            changes: dict[str, list[str]] = {
                "added": [k for k in now if k not in last],
                "modified": [k for k, v in now.items() if k in last and last[k] != v],
                "removed": [k for k in last if k not in now],
            }
            last = now
            callback(entries, changes)
            want = 0 if limit is None or not reverse or not windowed else limit - len(entries)
            if want > 0 and not pulling and self.has_older(table, private=private):
                task = asyncio.get_running_loop().create_task(self._pull(table, want, private))
                pulling.append(task)
                task.add_done_callback(lambda _t: pulling.clear())

        sub = self.engine.subscribe(scan, deliver, deferred=True)
        asyncio.get_running_loop().call_soon(sub.deliver_first)

        def unsubscribe() -> None:
            self.engine.unsubscribe(sub)
            for t in pulling:
                t.cancel()

        return unsubscribe

    async def _pull(self, table: str, want: int, private: bool) -> None:
        # Offline or busy: the next change of the scan asks again.
        with contextlib.suppress(SyncedStoreError):
            await self.load_older(table, limit=min(500, want), private=private)
