"""Sending a batch's finished row writes while its next mutations run (PostgreSQL writer).

The writer's transaction buffers row writes and client updates (postgres_tx.py). Sent only
before the commit, a batch of 2,000 mutations would run every mutator first and leave the
database idle, then wait for the database with the event loop idle. Instead, once
:data:`SEND_AHEAD_ROWS` writes of *finished* mutations (none inside an open savepoint) are
buffered, they are handed to the database in the background and the next mutators run while
it stores them: :class:`SendAhead` keeps at most one such statement in flight on the
connection.

Nothing changes for the transaction's guarantees: what is sent ahead belongs to mutations
that completed (their savepoints released), inside the same transaction, in order; any other
statement (a read the buffer cannot answer, a savepoint made real, the commit) first waits
for it (:meth:`SendAhead.settle`), and its failure breaks the transaction like any other
statement's, so the batch rolls back as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["SEND_AHEAD_ROWS", "SendAhead"]

#: Buffered writes of finished mutations that are sent ahead of the commit.
SEND_AHEAD_ROWS = 250


class SendAhead:
    """At most one background send of buffered writes on the writer's connection."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: asyncio.Task[Any] | None = None

    @property
    def busy(self) -> bool:
        """True while a send is still running."""
        return self._task is not None and not self._task.done()

    async def start(self, send: Coroutine[Any, Any, Any]) -> None:
        """Run ``send`` in the background (after what was in flight, whose error it raises),
        and yield once so it hands its statement to the connection now."""
        await self.settle()
        self._task = asyncio.get_running_loop().create_task(send)
        await asyncio.sleep(0)

    async def settle(self) -> None:
        """Wait for the send in flight, if any; raises its error."""
        task, self._task = self._task, None
        if task is not None:
            await task

    async def abandon(self) -> None:
        """Wait for the send in flight, ignoring its outcome (the transaction rolls back)."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait([task])
        except BaseException:
            task.cancel()
            raise
        if not task.cancelled():
            task.exception()  # retrieved: its failure is the rollback's reason, not news
