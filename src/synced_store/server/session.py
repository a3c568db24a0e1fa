"""One client connection on the server: what it may see, how its frames go out, and the queue
it sends from when it cannot keep up.

A session that keeps up **follows** its instance's fan-out (fanout.py): each flush writes the
frame it shares with every session of the same cookie and visibility straight to its socket
(:meth:`Session.write_now`, from inside the commit), and the session keeps only its cookie and
the handle bindings its client was told. A session that does not keep up — a catch-up in
progress, a socket that asked the server to pause, a send in flight — **lags**: flushes are
merged into its own queue (``_pending``, latest value per row wins), and one sender task drains
it into pokes with per-connection deltas. A client that reads slowly therefore receives fewer,
larger pokes, never a backlog of stale row versions. The queue is bounded in rows
(``MAX_PENDING_ROWS``) and bytes (``max_outbound_bytes``): past either, the session drops it
and catches the client up from the database instead. Once its queue is drained, a lagging
session follows again from the next flush.

Catch-ups (connect, reconnect, overflow, a client's ``pull``) are read from the database in
parts of ``catch_up_part_bytes`` (``InstanceStore.catch_up``) and sent as one multi-part poke;
each part is read only once the socket took the previous one, so a connection holds at most
about two parts, however large the instance. Flushes that land meanwhile queue as usual and
travel in the final part, so the client applies the whole catch-up at one consistent version.

Every wait for the socket records when it started (``send_started``); the registry's
supervisor aborts a connection whose send has waited longer than ``send_timeout`` (a client
that does not read).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from ..core.keys import private_ns
from ..core.patch import del_op, make_merge
from ..errors import StorageError
from ..protocol.codec import encode
from ..protocol.codes import CloseCode
from ..protocol.messages import Binding, MutationErrorReport, Poke, ServerMessage, raw_ops
from ..protocol.ops import op_text
from ..storage.base import CatchUp, InstanceStore
from ..types import RowKey
from .fanout import FRAME_BUDGET, Change, Fanout, ops_bytes
from .limits import ServerLimits
from .windows import below_floors, floor_encoder
from .wire import SharedFrame, Wire

__all__ = ["MAX_PENDING_ROWS", "Session"]

log = logging.getLogger("synced_store.server")
MAX_PENDING_ROWS = 20_000
SENT_CACHE_ROWS = 2_000
#: Accounted size of a queued deletion.
DEL_BYTES = 64
#: Rejected-mutation reports sent with each part of a catch-up before its last.
ERRORS_PER_PART = 25
_DEFAULT_LIMITS = ServerLimits()


def _bytes(change: Change) -> int:
    return DEL_BYTES if change is None else change[3]


class Session:
    """The server side of one client's connection to one instance."""

    def __init__(
        self,
        *,
        wire: Wire,
        fanout: Fanout,
        close: Callable[[int, str], Awaitable[None]],
        store: InstanceStore,
        user_id: str,
        client_id: str,
        cookie: int | None,
        known_lmid: int,
        schema_version: int | None = None,
        limits: ServerLimits = _DEFAULT_LIMITS,
        lmid_of: Callable[[], Awaitable[int]] | None = None,
        abort: Callable[[int, str], None] | None = None,
        end: Callable[[int, str], None] | None = None,
        windows: Mapping[str, int] | None = None,
        window_bytes: int = 1 << 20,
    ) -> None:
        #: The schema's pull windows (a reset sends their latest rows: server/windows.py).
        self.windows = windows
        self.window_bytes = window_bytes
        self._floors: dict[tuple[str, str], Any] = {}
        #: The schema version the client's mutations are written against (older ones are
        #: migrated with the schema's ``migrate_pending_mutation`` steps).
        self.schema_version = schema_version
        self._wire = wire
        self._fanout = fanout
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
        #: The namespace of this user's private rows.
        self.own_ns = private_ns(user_id)
        #: The fan-out's version up to which the client has every change it may see.
        self.synced_to = -1
        self._pending: dict[RowKey, Change] = {}
        self._pending_bytes = 0
        self._pending_version = 0
        self._pending_lmid: int | None = None
        self._pending_errors: list[MutationErrorReport] = []
        self._errors_bytes = 0
        self._extras: list[bytes] = []
        self._extras_bytes = 0
        self._after_flush: list[bytes] = []
        self._need_pull = True
        self._wake = asyncio.Event()
        self._wake.set()
        #: Values this connection last sent per row, for the lagging path's deltas (stale once
        #: the fan-out wrote to it directly: cleared before the next use).
        self._sent: OrderedDict[RowKey, tuple[Any, int]] = OrderedDict()
        self._sent_bytes = 0
        self._sent_stale = False
        #: The handle bindings this connection's client was told, by handle.
        self._known: dict[int, Binding] = {}
        #: True while the sender task is sending.
        self._sending = False
        #: Loop time at which the wait for the socket in progress started (None: none).
        self.send_started: float | None = None
        self.closed = False
        self.bytes_sent = 0
        self.actions_in_flight = 0

    async def _stored_lmid(self) -> int:
        owner = await self._store.client(self.client_id)
        return 0 if owner is None else owner[1]

    # -- following the fan-out (called by it, synchronously) ------------------------------

    def _lagging(self) -> bool:
        return bool(
            self._need_pull
            or self._sending
            or self._pending
            or self._pending_lmid is not None
            or self._pending_errors
            or self._extras
            or not self._wire.direct
        )

    def follows(self, flushed: int) -> bool:
        """True if this session takes the fan-out's next frame as is: it keeps up and has every
        visible change up to ``flushed``, the fan-out's previous flush."""
        return not self.closed and self.synced_to == flushed and not self._lagging()

    def write_now(self, frame: SharedFrame) -> bool:
        """Write a fan-out frame at once; False if the socket cannot take it now."""
        if not self._wire.try_write(frame):
            return False
        self.bytes_sent += len(frame.payload)
        self._sent_stale = True
        return True

    def knows(self, bindings: Iterable[Binding]) -> bool:
        """True if this connection's client was told each of ``bindings``."""
        known = self._known
        return all(known.get(b.handle) is b for b in bindings)

    def learn(self, bindings: Iterable[Binding]) -> None:
        """Note bindings sent to this connection's client."""
        for b in bindings:
            self._known[b.handle] = b

    def enqueue(
        self,
        version: int,
        changes: dict[RowKey, Change],
        lmid: int | None,
        errors: list[MutationErrorReport] | None,
    ) -> None:
        """Merge a flush into this session's own queue (it lags; the sender task sends it)."""
        if self.closed:
            return
        pending = self._pending
        size = self._pending_bytes
        for key, change in changes.items():
            old = pending.get(key, False)
            if old is not False:
                size -= _bytes(old)  # type: ignore[arg-type]
            pending[key] = change
            size += _bytes(change)
        if errors:
            self._pending_errors.extend(errors)
            self._errors_bytes += sum(len(e.message) + 64 for e in errors)
        self._pending_bytes = size
        self._pending_version = version
        if lmid is not None:
            self._pending_lmid = lmid
        if len(pending) > MAX_PENDING_ROWS or size > min(
            self._limits.max_outbound_bytes, FRAME_BUDGET
        ):
            # Too much to hold (or to send as one frame): read it from the database instead.
            # The error reports stay (the database keeps only the newest of them).
            self._drop_pending()
            self._pending_lmid = None
            self._need_pull = True
        if self._errors_bytes > self._limits.max_outbound_bytes:
            self.abort(CloseCode.POLICY_VIOLATION, "too many unread error reports")
            return
        if self._has_poke() or self._need_pull:
            self._wake.set()

    def release_replies(self) -> None:
        """Write the replies that waited for the fan-out's flush (see :meth:`send_message`)."""
        replies, self._after_flush = self._after_flush, []
        for text in replies:
            self._reply(text)

    def _drop_pending(self) -> None:
        self._pending = {}
        self._pending_bytes = 0

    def _has_poke(self) -> bool:
        """True if a poke is due: rows, a confirmation or rejected mutations to send."""
        return bool(self._pending) or self._pending_lmid is not None or bool(self._pending_errors)

    # -- replies and control ---------------------------------------------------------------

    def request_pull(self) -> None:
        """Send the client everything since its cookie again (the ``pull`` message)."""
        self._need_pull = True
        self._wake.set()

    def send_message(self, message: ServerMessage) -> None:
        """Send a message that is not a poke (push_response, error, action_result) after the
        pokes of what was committed before it.

        A connection that lets more than ``max_outbound_bytes`` of these pile up (it sends
        requests and does not read the replies) is aborted with 1008.
        """
        if self.closed:
            return
        text = encode(message)
        if self._fanout.holding:
            # The commits before it wait for the fan-out's window: after them (the flush goes
            # to this session first, directly or into its queue).
            self._after_flush.append(text)
            self._fanout.reply_after_flush(self)
            return
        self._reply(text)

    def _reply(self, text: bytes) -> None:
        if self.closed:
            return
        if not self._lagging() and self.write_now(SharedFrame(text)):
            return
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
        """Abort the connection if its wait for the socket started more than ``send_timeout``
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
        """Send catch-ups, the queue and replies until the session closes. Run as a task of
        the connection."""
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            if self.closed:
                return
            self._sending = True
            try:
                await self._send_all()
            finally:
                self._sending = False

    async def _send_all(self) -> None:
        """Send until nothing is due: a catch-up first, then the queued poke, then the replies
        queued so far (a reply never overtakes a poke queued before it)."""
        while not self.closed:
            if self._need_pull:
                await self._send_catch_up()
            elif self._has_poke():
                await self._send_pending()
            elif self._extras:
                extras, self._extras = self._extras, []
                self._extras_bytes = 0
                for text in extras:
                    await self._send_text(text)
            else:
                return

    async def _send_text(self, text: bytes) -> None:
        self.bytes_sent += len(text)
        self.send_started = asyncio.get_running_loop().time()
        try:
            await self._wire.write(text)
        finally:
            self.send_started = None

    # -- catch-ups -------------------------------------------------------------------------

    async def _start_phase(self, base: int | None) -> tuple[CatchUp, int]:
        """Begin reading a catch-up from ``base`` to the committed version. From here on,
        what commits is queued in ``_pending`` (and sent with the final part). Queued error
        reports stay: they travel with the catch-up (the database keeps only the newest
        ``errors_per_client``, and a connected client is told of every one)."""
        self._need_pull = False
        self._drop_pending()
        self._pending_lmid = None
        enc = floor_encoder(self._floors) if self._floors else op_text
        cu = self._store.catch_up(
            base,
            namespaces=("", self.own_ns),
            encode=enc,
            windows=self.windows,
            window_bytes=self.window_bytes,
        )
        return cu, await self._lmid_of()

    async def _send_catch_up(self) -> None:
        """Send everything since the client's cookie as one multi-part poke (module doc)."""
        base = self.cookie
        self._sent.clear()
        self._sent_bytes = 0
        self._sent_stale = False
        part_bytes = self._limits.catch_up_part_bytes
        self._floors = {}
        cu, lmid = await self._start_phase(base)
        errors = _merged(self._take_errors(), await self._errors_between(self.known_lmid, lmid))
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
                if cu.done and cu.windows.floors:  # a windowed reset: nothing below them
                    self._floors = cu.windows.floors
                if cu.done and not self._need_pull:
                    break
                if cu.done:
                    # The queue overflowed while we read: go on with what changed since, in
                    # the same poke, so the client still applies one consistent version.
                    await cu.close()
                    known = lmid
                    cu, lmid = await self._start_phase(cu.upto)
                    phase_started = True
                    errors = _merged(
                        errors,
                        self._take_errors(),
                        await self._errors_between(known, lmid),
                    )
                    if not ops:
                        continue
                if self._floors:
                    ops = [op for op in ops if op]
                part = Poke(final=False, reset=bool(reset and first), patch=raw_ops(ops))
                first = False
                if errors:  # reports travel in parts too (the client keeps them to the end)
                    part.errors, errors = errors[:ERRORS_PER_PART], errors[ERRORS_PER_PART:]
                text = encode(part)
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
        floors = self._floors
        if floors:
            below_floors(self._pending, floors)
            self._floors = {}
        if self._has_poke():
            patch.extend(self._pending_ops())
            version = max(version, self._pending_version)
            if self._pending_lmid is not None:
                lmid = max(lmid, self._pending_lmid)
            self._pending_lmid = None
        # Reports of commits the fan-out still holds whose mutations this poke confirms (the
        # database may have pruned them already); the flush tells of the later ones.
        held = [e for e in self._fanout.held_errors(self.client_id) if e.id <= lmid]
        errors = _merged(errors, self._take_errors(), held)
        if patch and ops_bytes(patch) > FRAME_BUDGET // 2:
            # The last rows read and the commits queued meanwhile: as a part of their own,
            # so that the final part stays far under a frame's limit.
            part = Poke(final=False, reset=bool(reset and first), patch=patch)
            first = False
            if errors:
                part.errors, errors = errors[:ERRORS_PER_PART], errors[ERRORS_PER_PART:]
            patch = []
            await self._send_text(encode(part))
            del part
        final = Poke(
            final=True,
            reset=bool(reset and first),
            base_cookie=base,
            cookie=version,
            last_mutation_id=lmid,
            errors=errors or None,
            patch=patch,
            windows=[[ns, t, *ek] for (ns, t), ek in floors.items()]
            if reset and self.windows
            else None,
        )
        # The client holds all of this once the frame is written: a flush that lands while the
        # socket takes it must already see it (what it may skip, where it stands).
        self.cookie = version
        self.synced_to = version
        self.known_lmid = max(self.known_lmid, lmid)
        if self._fanout.holds_after(version):
            # Commits after ``version`` wait for the fan-out's window: this catch-up left their
            # rows out, so the client does not hold what the flush's deltas are against. Take
            # that flush from the queue (whole rows) before following.
            self.synced_to = -1
        await self._send_text(encode(final))

    def _take_errors(self) -> list[MutationErrorReport]:
        errors, self._pending_errors = self._pending_errors, []
        self._errors_bytes = 0
        return errors

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

    # -- the lagging path's pokes ----------------------------------------------------------

    async def _send_pending(self) -> None:
        """Send the queue as one poke, each row a delta against what this connection last
        sent it where that is smaller."""
        if self._sent_stale:  # the fan-out wrote to this connection since: start over
            self._sent.clear()
            self._sent_bytes = 0
            self._sent_stale = False
        pending = self._pending
        self._drop_pending()
        ops: list[Any] = []
        sent = self._sent
        deltas = self._fanout.deltas
        for key, change in pending.items():
            if change is None:
                ops.append(del_op(key))
                self._forget_sent(key)
                continue
            sk, value, encoded, size = change
            prev = sent.get(key)
            op = make_merge(key, sk, prev[0], value) if prev is not None and deltas else None
            ops.append(encoded if op is None else op)
            self._remember_sent(key, value, size)
        version = max(self._pending_version, self.cookie or 0)
        msg = Poke(base_cookie=self.cookie, cookie=version, patch=ops)
        told = self.known_lmid  # reports up to it reached the client already (a catch-up)
        if self._pending_lmid is not None:
            msg.last_mutation_id = self._pending_lmid
            self.known_lmid = max(told, self._pending_lmid)
            self._pending_lmid = None
        errors = [e for e in self._take_errors() if e.id > told]
        if errors:
            msg.errors = errors
        self.cookie = version
        self.synced_to = version
        await self._send_text(encode(msg))


def _merged(*lists: list[MutationErrorReport]) -> list[MutationErrorReport]:
    """Error reports of several sources, each mutation once, in id order."""
    by_id: dict[int, MutationErrorReport] = {}
    for errors in lists:
        for e in errors:
            by_id.setdefault(e.id, e)
    return [by_id[i] for i in sorted(by_id)]
