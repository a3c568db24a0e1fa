"""Every committed version of an instance reaches its fan-out once and in order, whichever
process committed it.

The fan-out (fanout.py) keeps the last value it sent of each row and assumes it sees every
commit in version order. With one process per instance that is simply the writer's order. On a
shared backend (PostgreSQL: several processes serve the same instance) another process may
commit between two of this one's commits, so a :class:`CommitFollower` stands between the
writer and the fan-out and keeps one number, :attr:`fanned`, the version the fan-out has:

* **A local commit.** The writer's transaction holds the instance's lock and begins at the
  version last committed by anyone. If that is past :attr:`fanned`, the writer reads the rows
  changed in between inside its transaction (:meth:`read_gap`, before its own writes); after
  its commit it hands them to the fan-out first, as one commit, then its own
  (:meth:`committed`), synchronously: nothing else runs between the commit and the fan-out.
* **A remote commit.** The backend's listener (``LISTEN``) calls :meth:`notified` with the
  version another process committed. A task reads every row changed after :attr:`fanned`
  (``InstanceStore.changes_since``, one consistent read) and hands those newer than
  :attr:`fanned` to the fan-out, without any ``last_mutation_id``: a client pushes through
  its own connection's process, which confirms it — unless the client moved to this process
  while a push of its was in flight on the other one. The read also lists the clients whose
  ``last_mutation_id`` those versions changed (``clients_moved``): a session of one of them
  here then catches up from the database, which brings its confirmation and its rejected
  mutations. If the writer's commit is landing
  meanwhile (:attr:`landing`), the read is dropped and done again after it, so a remote read
  never overtakes a local commit and its confirmations.
* **Missed news.** When the listener reconnected it calls :meth:`notified` with None: the
  same read catches up whatever was committed while nobody listened, so no poke is lost.

Rows come back as the ``changes`` of a local commit: the ``set`` op built around the stored
bytes (protocol/ops.py), the decoded value for deltas, its size; deletions as None. An
instance that fell more than ``MAX_GAP_ROWS`` rows behind fails instead (its clients
reconnect and catch up from the database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from ..errors import InstanceUnavailableError, StorageError
from ..protocol.messages import MutationErrorReport
from ..protocol.ops import set_op_json
from ..storage.base import InstanceStore, WriterTx
from ..storage.records import Changes, HistoryCompactedError
from ..types import RowKey
from .fanout import MAX_FANOUT_ROWS, Change, Fanout

__all__ = ["MAX_GAP_ROWS", "CommitFollower"]

log = logging.getLogger("synced_store.server")
#: Rows changed by other processes that a follower takes in at once, at most.
MAX_GAP_ROWS = MAX_FANOUT_ROWS
#: A failed read of remote commits is retried after this long, doubling up to 2 s.
RETRY_DELAY = 0.05


class CommitFollower:
    """Feeds an instance's fan-out every version in order (module doc). ``fail`` stops the
    instance (called when the follower cannot catch up); ``clients_moved`` is told the
    ``last_mutation_id`` of clients whose pushes another process committed."""

    def __init__(
        self,
        instance_id: str,
        store: InstanceStore,
        fanout: Fanout,
        fail: Callable[[BaseException], None],
        clients_moved: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self._instance_id = instance_id
        self._clients_moved = clients_moved
        self._store = store
        self._fanout = fanout
        self._fail = fail
        #: The version the fan-out has (every change up to it was handed to it).
        self.fanned = store.version
        #: True from the writer's commit until its changes reached the fan-out.
        self.landing = False
        self._due = False
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Remote versions taken in, and reads of them (tests and benchmarks).
        self.taken_in = 0
        if store.shared:
            store.watch(self.notified)

    # -- local commits ---------------------------------------------------------------------

    async def read_gap(self, tx: WriterTx) -> Changes | None:
        """What other processes committed after :attr:`fanned` and before ``tx`` took the
        lock (None: nothing), read inside ``tx``."""
        if tx.version <= self.fanned:
            return None
        gap = await tx.changes_since(self.fanned, limit=MAX_GAP_ROWS)
        if gap.rows is None:
            raise InstanceUnavailableError(
                f"instance {self._instance_id} fell more than {MAX_GAP_ROWS} rows behind other "
                "processes"
            )
        return gap

    def committed(
        self,
        gap: Changes | None,
        version: int,
        changes: dict[RowKey, Change] | None,
        lmids: dict[str, int],
        errors: dict[str, list[MutationErrorReport]],
    ) -> None:
        """Hand a committed batch to the fan-out: the gap first, then the batch (``changes``
        None: a commit that kept the version). Call synchronously after the commit."""
        try:
            if gap is not None:
                self._take_in(gap)
            if changes is not None and version > self.fanned:
                self.fanned = version
                self._fanout.on_commit(version, changes, lmids, errors)
        finally:
            self.landing = False
            if self._due:
                self._start()

    # -- remote commits --------------------------------------------------------------------

    def notified(self, version: int | None) -> None:
        """Another process committed ``version`` (None: maybe something, news was lost)."""
        if self._closed or (version is not None and version <= self.fanned):
            return
        self._due = True
        self._start()

    async def reach(self, version: int, timeout: float = 2.0) -> None:
        """Take in other processes' commits now, until the fan-out has ``version`` (the
        cookie of a client that was on another process, which may be ahead of this one), no
        newer commit exists, or ``timeout`` passed: its catch-up then starts from its cookie
        instead of a reset."""
        if version <= self.fanned or not self._store.shared or self._closed:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._due = True
        while self.fanned < version and not self._closed:
            left = deadline - loop.time()
            if left <= 0:
                return
            task = self._task
            if task is None or task.done():
                if not self._due:
                    return  # read to the end: nothing newer is committed
                if self.landing:  # the writer restarts the read once its commit is out
                    await asyncio.sleep(0.001)
                    continue
                self._start()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), left)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._catch_up(), name=f"follow:{self._instance_id}"
            )

    async def _catch_up(self) -> None:
        try:
            await self._follow()
        except Exception as exc:  # a bug: this instance stops (its clients reconnect)
            log.exception("instance %s: following other processes failed", self._instance_id)
            self._fail(InstanceUnavailableError(f"following other processes failed: {exc!r}"))

    async def _follow(self) -> None:
        delay = RETRY_DELAY
        while self._due and not self._closed:
            self._due = False
            try:
                gap = await self._store.changes_since(self.fanned, limit=MAX_GAP_ROWS)
            except HistoryCompactedError as exc:
                self._fail(exc)
                return
            except StorageError as exc:
                log.warning(
                    "instance %s: reading other processes' commits failed (%s); retrying",
                    self._instance_id,
                    exc,
                )
                self._due = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self._closed:
                return
            if self.landing:  # the writer's commit goes first; read again after it
                self._due = True
                return
            if gap.rows is None:
                self._fail(
                    InstanceUnavailableError(
                        f"instance {self._instance_id} fell more than {MAX_GAP_ROWS} rows "
                        "behind other processes"
                    )
                )
                return
            self._take_in(gap)

    def _take_in(self, gap: Changes) -> None:
        """Hand the rows of ``gap`` newer than :attr:`fanned` to the fan-out as one commit."""
        known = self.fanned
        if gap.upto <= known or gap.rows is None:
            return
        changes: dict[RowKey, Change] = {}
        for r in gap.rows:
            if r.version <= known:
                continue  # the fan-out has it (a local commit took it in meanwhile)
            key = RowKey(r.ns, r.table, r.item)
            if r.value is None:
                changes[key] = None
                continue
            op = set_op_json(key, r.sort_key, r.value.encode())
            value: Any = orjson.loads(r.value)
            changes[key] = (r.sort_key, value, msgspec.Raw(op), len(op))
        self.fanned = gap.upto
        if gap.upto > self._store.version:
            self._store.version = gap.upto  # catch-ups now stop at what the fan-out has
        self.taken_in += 1
        if changes:
            self._fanout.on_commit(gap.upto, changes, {}, {})
        if gap.clients and self._clients_moved is not None:
            self._clients_moved(gap.clients)

    def close(self) -> None:
        """Stop following (the instance closes or failed)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
