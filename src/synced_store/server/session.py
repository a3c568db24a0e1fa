"""One client connection on the server: what it may see, and a coalescing poke queue.

Changes committed by the instance's writer are merged into ``_pending`` (latest value per row
wins), and one sender task drains it. A client that reads slowly therefore receives fewer,
larger pokes, never a backlog of stale row versions; past ``MAX_PENDING_ROWS`` distinct rows the
session drops its queue and re-pulls from the database. A string field that only grew since the
value this connection last sent for the row travels as an append delta, and a poke made only of
such appends to already-named rows travels as a compact append frame (protocol/append.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ..core.patch import del_op, make_merge
from ..protocol.append import AppendHandles
from ..storage.sqlite import SqliteInstanceStore
from ..types import RowKey
from .eager import start_eagerly

__all__ = ["MAX_PENDING_ROWS", "Session"]

log = logging.getLogger("synced_store.server")
MAX_PENDING_ROWS = 20_000
SENT_CACHE_ROWS = 2_000
#: A row sent less than this long ago waits out the rest of the window before it is sent again,
#: so a row updated by a stream (an LLM reply) reaches each client at most 25 times a second,
#: merged. Writes to rows not sent recently go out at once.
ROW_INTERVAL = 0.040
PART_BYTES = 1 << 20
#: A row whose string field grows again within this many seconds of its last send to a client
#: gets an append-frame handle on that connection (protocol/append.py).
STREAM_GAP = 1.0

Change = tuple[str, Any, Any] | None  # (sort key, value, pre-encoded set op) or None: deleted


class Session:
    """The server side of one client's connection to one instance."""

    def __init__(
        self,
        *,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        store: SqliteInstanceStore,
        user_id: str,
        client_id: str,
        cookie: int | None,
        known_lmid: int,
        append_deltas: bool = True,
        schema_version: int | None = None,
    ) -> None:
        #: The schema version the client's mutations are written against (older ones are
        #: migrated with the schema's ``migrate_pending_mutation`` steps).
        self.schema_version = schema_version
        self._append_deltas = append_deltas
        self._send = send
        self._close = close
        self._store = store
        self.user_id = user_id
        self.client_id = client_id
        self.cookie = cookie
        self.known_lmid = known_lmid
        self._own_ns = "u:" + user_id
        self._pending: dict[RowKey, Change] = {}
        self._pending_version = 0
        self._pending_lmid: int | None = None
        self._pending_errors: list[dict[str, Any]] = []
        self._extras: list[str] = []
        self._need_pull = True
        self._wake = asyncio.Event()
        self._wake.set()
        self._sent: OrderedDict[RowKey, Any] = OrderedDict()
        self._sent_at: dict[RowKey, float] = {}
        self._handles = AppendHandles()
        #: True while the sender task or an eager send (on_commit) is sending.
        self._sending = False
        self._failed: Exception | None = None
        #: Whether on_commit may send eagerly: None until the connection's first send shows
        #: whether a send suspends; False for good once one has.
        self._eager: bool | None = None
        self._eager_task: asyncio.Task[None] | None = None
        self.closed = False
        self.bytes_sent = 0
        self.actions_in_flight = 0

    # -- called by the instance (synchronously, on the loop) ------------------------------

    def on_commit(
        self,
        version: int,
        changes: dict[RowKey, Change],
        lmid: int | None,
        errors: list[dict[str, Any]] | None,
    ) -> None:
        """Merge a committed batch into this session's queue."""
        if self.closed:
            return
        pending = self._pending
        own = self._own_ns
        for key, change in changes.items():
            ns = key.ns
            if ns == "" or ns == own:
                pending[key] = change
        if len(pending) > MAX_PENDING_ROWS:
            pending.clear()
            self._need_pull = True
        self._pending_version = version
        if lmid is not None:
            self._pending_lmid = lmid
        if errors:
            self._pending_errors.extend(errors)
        if not self._has_poke():
            if self._need_pull:
                self._wake.set()
            return  # nothing in this commit that this connection may see
        if (
            self._eager is not True
            or self._sending
            or self._need_pull
            or self._extras
            or self._window_left() > 0
        ):
            self._wake.set()
            return
        # The sender is idle, this connection's sends finish without suspending, and nothing
        # holds this change back: send it now, from inside the commit's fan-out, instead of
        # waking the sender task (eager.py).
        self._sending = True
        task = start_eagerly(self._send_now())
        if task is not None:  # it suspended after all: from now on the sender task sends
            self._eager = False
            self._eager_task = task

    def _has_poke(self) -> bool:
        """True if a poke is due: rows, a confirmation or rejected mutations to send."""
        return bool(self._pending) or self._pending_lmid is not None or bool(self._pending_errors)

    def _window_left(self) -> float:
        """Seconds until every pending row's ``ROW_INTERVAL`` since its last send is over."""
        sent_at = self._sent_at
        if not sent_at:  # send times are kept only with append deltas on
            return 0.0
        latest = max((sent_at.get(k, -ROW_INTERVAL) for k in self._pending), default=-ROW_INTERVAL)
        return latest + ROW_INTERVAL - asyncio.get_running_loop().time()

    async def _send_now(self) -> None:
        try:
            await self._send_pending()
        except (Exception, asyncio.CancelledError) as exc:
            # Never into the commit that called on_commit: the sender task raises it, as if
            # its own send had failed, and the connection ends.
            self._failed = (
                exc if isinstance(exc, Exception) else ConnectionError(f"send failed: {exc!r}")
            )
            self._wake.set()
        finally:
            self._sending = False
            self._eager_task = None
            if self._has_poke() or self._extras or self._need_pull:
                self._wake.set()

    def request_pull(self) -> None:
        """Send the client everything since its cookie again (the ``pull`` message)."""
        self._need_pull = True
        self._wake.set()

    def send_message(self, message: dict[str, Any]) -> None:
        """Queue a non-poke message (push_response, error, action_result) after pending pokes."""
        if not self.closed:
            self._extras.append(orjson.dumps(message).decode())
            self._wake.set()

    async def kick(self, code: int, reason: str) -> None:
        """Close this connection (for example replaced by a newer one with the same client id)."""
        self.closed = True
        self._wake.set()
        try:
            await self._close(code, reason)
        except Exception:  # the socket may already be gone
            log.debug("close failed", exc_info=True)

    # -- sender task -----------------------------------------------------------------------

    async def run_sender(self) -> None:
        """Send pokes until the session closes. Run as a task of the connection."""
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            if self.closed:
                return
            if self._failed is not None:
                raise self._failed
            if self._sending:  # an eager send is in progress; it wakes us when done
                continue
            self._sending = True
            try:
                await self._send_all()
            finally:
                self._sending = False

    async def _send_all(self) -> None:
        if self._need_pull:
            self._need_pull = False
            await self._send_pull()
        wait = self._window_left()
        if wait > 0:  # merge what arrives meanwhile
            await asyncio.sleep(wait)
        if self._has_poke():
            await self._send_pending()
        while self._extras:
            extras, self._extras = self._extras, []
            for text in extras:
                await self._send_text(text)

    async def _send_text(self, text: str) -> None:
        self.bytes_sent += len(text)
        if self._eager is not None:
            await self._send(text)
            return
        # The connection's first send (from the sender task): learn whether a send finishes
        # without suspending (uvicorn writes to the socket at once). Only then may on_commit
        # send from inside the committing task. A callback scheduled now runs only if the
        # send gives the loop a turn.
        turned: list[bool] = []
        handle = asyncio.get_running_loop().call_soon(turned.append, True)
        try:
            await self._send(text)
        finally:
            handle.cancel()
        self._eager = not turned

    async def _send_pull(self) -> None:
        # Whatever commits while this runs is queued in _pending and sent right after.
        self._pending.clear()
        self._pending_lmid = None
        self._pending_errors = []
        base = self.cookie
        pull = await asyncio.to_thread(
            self._store.pull, base, self.user_id, self.client_id, self.known_lmid
        )
        self._sent.clear()
        self._handles.clear()
        tail: dict[str, Any] = {
            "base_cookie": base,
            "cookie": pull.version,
            "last_mutation_id": pull.last_mutation_id,
        }
        if pull.errors:
            tail["errors"] = pull.errors
        parts: list[list[str]] = [[]]
        size = 0
        for op in pull.ops:
            if size > PART_BYTES:
                parts.append([])
                size = 0
            parts[-1].append(op)
            size += len(op)
        for i, ops in enumerate(parts):
            final = i == len(parts) - 1
            head = '{"type":"poke","final":' + ("true" if final else "false")
            if pull.reset and i == 0:
                head += ',"reset":true'
            if final:
                head += "," + orjson.dumps(tail).decode()[1:-1]
            await self._send_text(head + ',"patch":[' + ",".join(ops) + "]}")
        self.cookie = pull.version
        self.known_lmid = max(self.known_lmid, pull.last_mutation_id)

    async def _send_pending(self) -> None:
        pending, self._pending = self._pending, {}
        ops: list[Any] = []
        sent = self._sent
        handles = self._handles
        now = asyncio.get_running_loop().time()
        sent_at = self._sent_at
        # ``pairs`` stays a list while every op is an append to a row this connection already
        # has a handle for: then the whole poke goes out as an append frame.
        pairs: list[Any] | None = (
            []
            if self.cookie is not None and self._pending_lmid is None and not self._pending_errors
            else None
        )
        binds: list[list[Any]] = []
        deltas = self._append_deltas
        for key, change in pending.items():
            last_sent = sent_at.get(key, -STREAM_GAP)
            if deltas:  # only deltas read it: the per-row window and stream naming
                sent_at[key] = now
            if change is None:
                ops.append(del_op(key))
                sent.pop(key, None)
                handles.drop(key)
                pairs = None
                continue
            sk, value, encoded = change
            prev = sent.get(key)
            op = make_merge(key, sk, prev, value) if prev is not None and deltas else None
            ops.append(encoded if op is None else op)
            grown = _single_append(op)
            bound = handles.get(key) if grown is not None else None
            if grown is not None and bound is not None and bound[1:] == (grown[0], sk):
                handles.touch(key)
                if pairs is not None:
                    pairs += (bound[0], grown[1])
            else:
                pairs = None
                # A row that grows again soon after its last send is being streamed: name it,
                # so its next appends travel as append frames.
                if grown is not None and now - last_sent < STREAM_GAP:
                    binds.append(handles.bind(key, grown[0], sk))
            if type(value) is dict:
                sent[key] = value
                sent.move_to_end(key)
                if len(sent) > SENT_CACHE_ROWS:
                    sent.popitem(last=False)
            else:  # no delta applies to a non-object; forget the object this row was before
                sent.pop(key, None)
        if len(sent_at) > 4 * SENT_CACHE_ROWS:
            cutoff = now - STREAM_GAP
            self._sent_at = {k: t for k, t in sent_at.items() if t > cutoff}
        version = max(self._pending_version, self.cookie or 0)
        base = self.cookie or 0
        if pairs and (version - base) % 10:
            self.cookie = version
            await self._send_text(orjson.dumps([base % 10, version - base, *pairs]).decode())
            return
        msg: dict[str, Any] = {
            "type": "poke",
            "base_cookie": self.cookie,
            "cookie": version,
            "patch": ops,
        }
        if binds:
            msg["bind"] = binds
        if self._pending_lmid is not None:
            msg["last_mutation_id"] = self._pending_lmid
            self.known_lmid = self._pending_lmid
            self._pending_lmid = None
        if self._pending_errors:
            msg["errors"], self._pending_errors = self._pending_errors, []
        self.cookie = version
        await self._send_text(orjson.dumps(msg).decode())


def _single_append(op: dict[str, Any] | None) -> tuple[str, str] | None:
    """``(field, suffix)`` if the merge ``op`` only appends to one field, else None."""
    if op is None or "set" in op or "unset" in op:
        return None
    append = op.get("append")
    if append is None or len(append) != 1:
        return None
    ((field, suffix),) = append.items()
    return field, suffix
