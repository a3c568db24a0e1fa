"""One client connection on the server: what it may see, and a coalescing poke queue.

Changes committed by the instance's writer are merged into ``_pending`` (latest value per row
wins), and one sender task drains it. A client that reads slowly therefore receives fewer,
larger pokes, never a backlog of stale row versions. The queue is bounded in rows
(``MAX_PENDING_ROWS``) and bytes (``max_outbound_bytes``): past either, the session drops it
and catches the client up from the database instead. A string field that only grew since the
value this connection last sent for the row travels as an append delta, and a poke made only of
such appends to already-named rows travels as a compact append frame (protocol/append.py).

Catch-ups (connect, reconnect, overflow, a client's ``pull``) are read from the database in
parts of ``catch_up_part_bytes`` (``InstanceStore.catch_up``) and sent as one multi-part poke;
each part is read only once the socket took the previous one, so a connection holds at most
about two parts, however large the instance. Commits that land meanwhile queue as usual and
travel in the final part, so the client applies the whole catch-up at one consistent version.

Every send records when it started (``send_started``); the registry's supervisor aborts a
connection whose send has waited longer than ``send_timeout`` (a client that does not read).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.patch import del_op, make_merge
from ..errors import StorageError
from ..protocol.append import AppendHandles, append_frame
from ..protocol.codec import encode
from ..protocol.codes import CloseCode
from ..protocol.messages import (
    Binding,
    MergeOp,
    MutationErrorReport,
    Poke,
    ServerMessage,
    raw_ops,
)
from ..protocol.ops import op_text
from ..storage.base import CatchUp, InstanceStore
from ..types import RowKey
from .eager import start_eagerly
from .limits import ServerLimits

__all__ = ["MAX_PENDING_ROWS", "Change", "Session"]

log = logging.getLogger("synced_store.server")
MAX_PENDING_ROWS = 20_000
SENT_CACHE_ROWS = 2_000
#: A row sent less than this long ago waits out the rest of the window before it is sent again,
#: so a row updated by a stream (an LLM reply) reaches each client at most 25 times a second,
#: merged. Writes to rows not sent recently go out at once.
ROW_INTERVAL = 0.040
#: A row whose string field grows again within this many seconds of its last send to a client
#: gets an append-frame handle on that connection (protocol/append.py).
STREAM_GAP = 1.0
#: Accounted size of a queued deletion.
DEL_BYTES = 64
#: Rejected-mutation reports sent with each part of a catch-up before its last.
ERRORS_PER_PART = 25
_DEFAULT_LIMITS = ServerLimits()

#: A committed row change: ``(sort key, value, pre-encoded set op, its size in bytes)``, or
#: None for a deletion.
Change = tuple[str, Any, Any, int] | None


def _bytes(change: Change) -> int:
    return DEL_BYTES if change is None else change[3]


class Session:
    """The server side of one client's connection to one instance."""

    def __init__(
        self,
        *,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        store: InstanceStore,
        user_id: str,
        client_id: str,
        cookie: int | None,
        known_lmid: int,
        append_deltas: bool = True,
        schema_version: int | None = None,
        limits: ServerLimits = _DEFAULT_LIMITS,
        lmid_of: Callable[[], Awaitable[int]] | None = None,
        abort: Callable[[int, str], None] | None = None,
        end: Callable[[int, str], None] | None = None,
    ) -> None:
        #: The schema version the client's mutations are written against (older ones are
        #: migrated with the schema's ``migrate_pending_mutation`` steps).
        self.schema_version = schema_version
        self._append_deltas = append_deltas
        self._send = send
        self._close = close
        self._abort = abort
        self._end = end
        self._store = store
        self._limits = limits
        self._lmid_of = lmid_of or self._stored_lmid
        self.user_id = user_id
        self.client_id = client_id
        self.cookie = cookie
        self.known_lmid = known_lmid
        self._own_ns = "u:" + user_id
        self._pending: dict[RowKey, Change] = {}
        self._pending_bytes = 0
        self._pending_version = 0
        self._pending_lmid: int | None = None
        self._pending_errors: list[MutationErrorReport] = []
        self._extras: list[str] = []
        self._extras_bytes = 0
        self._need_pull = True
        self._wake = asyncio.Event()
        self._wake.set()
        self._sent: OrderedDict[RowKey, tuple[Any, int]] = OrderedDict()
        self._sent_bytes = 0
        self._sent_at: dict[RowKey, float] = {}
        self._handles = AppendHandles()
        #: True while the sender task or an eager send (on_commit) is sending.
        self._sending = False
        self._failed: Exception | None = None
        #: Whether on_commit may send eagerly: None until the connection's first send shows
        #: whether a send suspends; False for good once one has.
        self._eager: bool | None = None
        self._eager_task: asyncio.Task[None] | None = None
        #: Loop time at which the send in progress started (None: not sending).
        self.send_started: float | None = None
        self.closed = False
        self.bytes_sent = 0
        self.actions_in_flight = 0

    async def _stored_lmid(self) -> int:
        owner = await self._store.client(self.client_id)
        return 0 if owner is None else owner[1]

    # -- called by the instance (synchronously, on the loop) ------------------------------

    def on_commit(
        self,
        version: int,
        changes: dict[RowKey, Change],
        lmid: int | None,
        errors: list[MutationErrorReport] | None,
    ) -> None:
        """Merge a committed batch into this session's queue."""
        if self.closed:
            return
        pending = self._pending
        own = self._own_ns
        size = self._pending_bytes
        for key, change in changes.items():
            ns = key.ns
            if ns == "" or ns == own:
                old = pending.get(key, False)
                if old is not False:
                    size -= _bytes(old)  # type: ignore[arg-type]
                pending[key] = change
                size += _bytes(change)
        if errors:
            self._pending_errors.extend(errors)
            size += sum(len(e.message) + 64 for e in errors)
        self._pending_bytes = size
        self._pending_version = version
        if lmid is not None:
            self._pending_lmid = lmid
        if len(pending) > MAX_PENDING_ROWS or size > self._limits.max_outbound_bytes:
            # Too much to hold for this connection: read it from the database instead (the
            # catch-up also carries the newest error reports, a bounded number).
            self._drop_pending()
            self._pending_lmid = None
            self._pending_errors = []
            self._need_pull = True
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

    def _drop_pending(self) -> None:
        self._pending = {}
        self._pending_bytes = 0

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

    def send_message(self, message: ServerMessage) -> None:
        """Queue a non-poke message (push_response, error, action_result) after pending pokes.

        A connection that lets more than ``max_outbound_bytes`` of these pile up (it sends
        requests and does not read the replies) is aborted with 1008.
        """
        if self.closed:
            return
        text = encode(message).decode()
        self._extras.append(text)
        self._extras_bytes += len(text)
        self._wake.set()
        if self._extras_bytes > self._limits.max_outbound_bytes:
            self.abort(CloseCode.POLICY_VIOLATION, "too many unread replies")

    async def kick(self, code: int, reason: str) -> None:
        """Close this connection (for example replaced by a newer one with the same client id)."""
        self.closed = True
        self._wake.set()
        try:
            await self._close(code, reason)
        except Exception:  # the socket may already be gone
            log.debug("close failed", exc_info=True)

    def end(self, code: int, reason: str) -> None:
        """Close this connection with ``code`` (a closing handshake, bounded in time)."""
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        if self._end is not None:
            self._end(code, reason)

    def abort(self, code: int, reason: str) -> None:
        """Close this connection at once, without waiting for a send in progress (a client
        that does not read): the socket is dropped, the session ends."""
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        log.info("closing client %s (%s): %s", self.client_id, self.user_id, reason)
        if self._abort is not None:
            self._abort(code, reason)

    def check_send_timeout(self, now: float) -> bool:
        """Abort the connection if its send in progress started more than ``send_timeout``
        seconds before ``now`` (loop time). Returns True if it did."""
        started = self.send_started
        if started is None or self.closed or now - started <= self._limits.send_timeout:
            return False
        self.abort(
            CloseCode.POLICY_VIOLATION,
            f"did not read for {self._limits.send_timeout:g}s (send timeout)",
        )
        return True

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
            await self._send_catch_up()
        wait = self._window_left()
        if wait > 0:  # merge what arrives meanwhile
            await asyncio.sleep(wait)
        if self._has_poke():
            await self._send_pending()
        while self._extras:
            extras, self._extras = self._extras, []
            self._extras_bytes = 0
            for text in extras:
                await self._send_text(text)

    async def _send_text(self, text: str) -> None:
        self.bytes_sent += len(text)
        loop = asyncio.get_running_loop()
        self.send_started = loop.time()
        try:
            if self._eager is not None:
                await self._send(text)
                return
            # The connection's first send (from the sender task): learn whether a send
            # finishes without suspending (uvicorn writes to the socket at once). Only then may
            # on_commit send from inside the committing task. A callback scheduled now runs
            # only if the send gives the loop a turn.
            turned: list[bool] = []
            handle = loop.call_soon(turned.append, True)
            try:
                await self._send(text)
            finally:
                handle.cancel()
            self._eager = not turned
        finally:
            self.send_started = None

    # -- catch-ups -------------------------------------------------------------------------

    async def _start_phase(self, base: int | None) -> tuple[CatchUp, int]:
        """Begin reading a catch-up from ``base`` to the committed version. From here on,
        what commits is queued in ``_pending`` (and sent with the final part; the committed
        ``last_mutation_id`` read after that may only be newer)."""
        self._need_pull = False
        self._drop_pending()
        self._pending_lmid = None
        self._pending_errors = []
        cu = self._store.catch_up(base, namespaces=("", self._own_ns), encode=op_text)
        return cu, await self._lmid_of()

    async def _send_catch_up(self) -> None:
        """Send everything since the client's cookie as one multi-part poke (module doc)."""
        base = self.cookie
        self._sent.clear()
        self._sent_bytes = 0
        self._handles.clear()
        part_bytes = self._limits.catch_up_part_bytes
        cu, lmid = await self._start_phase(base)
        errors = await self._errors_between(self.known_lmid, lmid)
        first = True  # no part sent yet
        reset: bool | None = None  # the first phase's, final after its first read
        phase_started = True
        try:
            while not self.closed:
                ops = await cu.next_part(part_bytes)
                if reset is None:
                    reset = cu.reset  # final once the first part is read (storage/base.py)
                elif phase_started and cu.reset:
                    # Compacted past this catch-up while it ran: the client reconnects and
                    # gets a reset.
                    raise StorageError("history compacted during a catch-up", transient=True)
                phase_started = False
                if cu.done and not self._need_pull:
                    break
                if cu.done:
                    # The queue overflowed while we read: go on with what changed since, in
                    # the same poke, so the client still applies one consistent version.
                    await cu.close()
                    known = lmid
                    cu, lmid = await self._start_phase(cu.upto)
                    phase_started = True
                    errors += await self._errors_between(known, lmid)
                    if not ops:
                        continue
                part = Poke(final=False, reset=bool(reset and first), patch=raw_ops(ops))
                first = False
                if errors:  # reports travel in parts too (the client keeps them to the end)
                    part.errors, errors = errors[:ERRORS_PER_PART], errors[ERRORS_PER_PART:]
                text = encode(part).decode()
                ops = []  # hold the part once, as text, while the socket takes it
                del part
                await self._send_text(text)
                del text
        finally:
            await cu.close()
        if self.closed:
            return
        # The final part: the last rows read, plus everything committed since the phase began.
        version = cu.upto
        patch: list[Any] = raw_ops(ops)
        del ops
        if self._has_poke():
            patch.extend(self._pending_ops())
            version = max(version, self._pending_version)
            if self._pending_lmid is not None:
                lmid = max(lmid, self._pending_lmid)
            errors.extend(self._pending_errors)
            self._pending_lmid = None
            self._pending_errors = []
        final = Poke(
            final=True,
            reset=bool(reset and first),
            base_cookie=base,
            cookie=version,
            last_mutation_id=lmid,
            errors=errors or None,
            patch=patch,
        )
        await self._send_text(encode(final).decode())
        self.cookie = version
        self.known_lmid = max(self.known_lmid, lmid)

    async def _errors_between(self, after: int, upto: int) -> list[MutationErrorReport]:
        return [
            MutationErrorReport(**e)
            for e in await self._store.errors_between(self.client_id, after, upto)
        ]

    def _pending_ops(self) -> list[Any]:
        """Take the queued rows as plain ``set``/``del`` ops (the catch-up's last part)."""
        pending = self._pending
        self._drop_pending()
        out: list[Any] = []
        for key, change in pending.items():
            if change is None:
                out.append(del_op(key))
                self._forget_sent(key)
            else:
                out.append(change[2])
                self._remember_sent(key, change[1], change[3])
        return out

    def _remember_sent(self, key: RowKey, value: Any, size: int) -> None:
        sent = self._sent
        if type(value) is not dict:  # no delta applies to a non-object
            self._forget_sent(key)
            return
        old = sent.pop(key, None)
        if old is not None:
            self._sent_bytes -= old[1]
        sent[key] = (value, size)
        self._sent_bytes += size
        budget = self._limits.max_outbound_bytes
        while len(sent) > SENT_CACHE_ROWS or (self._sent_bytes > budget and len(sent) > 1):
            _, (_, n) = sent.popitem(last=False)
            self._sent_bytes -= n

    def _forget_sent(self, key: RowKey) -> None:
        old = self._sent.pop(key, None)
        if old is not None:
            self._sent_bytes -= old[1]

    # -- pokes -----------------------------------------------------------------------------

    async def _send_pending(self) -> None:
        pending = self._pending
        self._drop_pending()
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
        binds: list[Binding] = []
        deltas = self._append_deltas
        for key, change in pending.items():
            last_sent = sent_at.get(key, -STREAM_GAP)
            if deltas:  # only deltas read it: the per-row window and stream naming
                sent_at[key] = now
            if change is None:
                ops.append(del_op(key))
                self._forget_sent(key)
                handles.drop(key)
                pairs = None
                continue
            sk, value, encoded, size = change
            prev = sent.get(key)
            op = make_merge(key, sk, prev[0], value) if prev is not None and deltas else None
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
            self._remember_sent(key, value, size)
        if len(sent_at) > 4 * SENT_CACHE_ROWS:
            cutoff = now - STREAM_GAP
            self._sent_at = {k: t for k, t in sent_at.items() if t > cutoff}
        version = max(self._pending_version, self.cookie or 0)
        base = self.cookie or 0
        if pairs and (version - base) % 10:
            self.cookie = version
            await self._send_text(append_frame(base, version, pairs).decode())
            return
        msg = Poke(base_cookie=self.cookie, cookie=version, patch=ops, bind=binds or None)
        if self._pending_lmid is not None:
            msg.last_mutation_id = self._pending_lmid
            self.known_lmid = self._pending_lmid
            self._pending_lmid = None
        if self._pending_errors:
            msg.errors, self._pending_errors = self._pending_errors, []
        self.cookie = version
        await self._send_text(encode(msg).decode())


def _single_append(op: MergeOp | None) -> tuple[str, str] | None:
    """``(field, suffix)`` if the merge ``op`` only appends to one field, else None."""
    if op is None or op.set or op.unset:
        return None
    append = op.append
    if append is None or len(append) != 1:
        return None
    ((field, suffix),) = append.items()
    return field, suffix
