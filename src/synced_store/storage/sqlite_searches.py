"""Searches of an SQLite instance in worker threads of their own, safe to cancel.

A search that matches many rows (a relevance-ordered search scores every match) runs for a
while in ``sqlite3_step``: it runs in a worker thread so the event loop goes on. Two rules
keep that safe and fair:

* **A connection is closed only by the thread that uses it.** Each search opens its own
  read connection in its worker thread and closes it there when done. Closing the reader
  (a cancelled ``$search``, an action that timed out) only *interrupts* the searches still
  running (``sqlite3_interrupt``, under a lock, so never on a connection being closed):
  they stop at their next step and release their thread. Closing a connection while another
  thread runs a statement on it crashes the process.
* **Searches have their own small pool of threads** (:data:`SEARCH_THREADS`), not asyncio's
  default executor that catch-ups and job scans use: a flood of searches waits in its own
  queue (a cancelled one leaves the queue unrun) and never delays an initial sync.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..errors import StorageError

__all__ = ["SEARCH_THREADS", "RunningSearches"]

T = TypeVar("T")

#: Worker threads that run searches of SQLite instances, for the whole process.
SEARCH_THREADS = 2

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _search_executor() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="synced-search")
        return _executor


class RunningSearches:
    """The searches of one reader in progress (see the module doc)."""

    def __init__(self, open_conn: Callable[[Path], sqlite3.Connection], path: Path) -> None:
        self._open = open_conn
        self._path = path
        self._lock = threading.Lock()
        self._running: set[sqlite3.Connection] = set()
        self._closed = False

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` on a new read connection, in a search thread (raises sqlite3
        errors, and :class:`StorageError` once :meth:`interrupt_all` was called)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_search_executor(), self._run, fn)

    def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._open(self._path)
        try:
            with self._lock:
                if self._closed:
                    raise StorageError("reader closed", transient=False)
                self._running.add(conn)
            try:
                return fn(conn)
            finally:
                with self._lock:
                    self._running.discard(conn)
        finally:
            conn.close()

    def interrupt_all(self) -> None:
        """Stop every search in progress and refuse new ones (never blocks on a search)."""
        with self._lock:
            self._closed = True
            for conn in self._running:
                conn.interrupt()
