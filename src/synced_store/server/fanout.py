"""An instance's fan-out: each commit's changes merged, encoded and framed once per group of
connections that need the same bytes, and written to each from inside the commit.

Commits are merged into one instance-level queue (latest value per row). A row sent less than
``ROW_INTERVAL`` ago holds the whole queue for the rest of that window (so a streamed row
reaches clients at most 25 times a second, its appends merged); otherwise the queue is
flushed at once. A **flush** turns the queue into ops once: a ``merge`` against the row's
previously flushed value where that is smaller (a string that grew is an append), else the
``set`` op as stored. A row seen growing again within ``STREAM_GAP`` gets an append handle,
shared by every connection of the instance (bound in the poke that first carries it), so
that a flush made only of appends to bound rows travels as an append frame.

Then every session either **follows** — it has every visible change up to the previous flush
and nothing of its own in flight — and gets this flush's frame for its cookie and its user's
visibility, encoded once for all sessions sharing them and written at once through its
:class:`~synced_store.server.wire.Wire`; or it **lags** (a catch-up, a send in flight, a
socket that asked to pause), and the flush's changes go into its own queue, which its sender
task drains with per-connection deltas (session.py). A lagging session that drained its queue
follows again from the next flush.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..core.patch import del_op, make_merge
from ..protocol.append import AppendHandles, append_frame
from ..protocol.codec import MAX_FRAME_BYTES, encode
from ..protocol.messages import Binding, MergeOp, MutationErrorReport, Poke
from ..types import RowKey
from .wire import SharedFrame

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "FRAME_BUDGET",
    "MAX_FANOUT_ROWS",
    "ROW_INTERVAL",
    "STREAM_GAP",
    "VALUE_CACHE_ROWS",
    "Change",
    "Fanout",
    "ops_bytes",
]

#: A committed row change: ``(sort key, value, its set op as stored JSON, that op's size)``, or
#: None for a deletion.
Change = tuple[str, Any, Any, int] | None

#: A row sent less than this long ago waits out the rest of the window (module doc).
ROW_INTERVAL = 0.040
#: A row whose string grows again within this many seconds of its last flush gets a handle.
STREAM_GAP = 1.0
#: Rows whose last flushed value is kept for deltas (least recently flushed go first).
VALUE_CACHE_ROWS = 4096
#: Bytes of those values kept at most (accounted by their stored JSON size).
VALUE_CACHE_BYTES = 8 << 20
#: Rows queued past this are flushed at once, window or not.
MAX_FANOUT_ROWS = 20_000
#: A frame the server builds stays under this (clients refuse frames over
#: ``MAX_FRAME_BYTES``, 8 MiB): a flush larger than this reaches every connection through its
#: own queue, which turns it into a catch-up in parts.
FRAME_BUDGET = MAX_FRAME_BYTES * 3 // 4


class _Flush:
    """One flush's ops, computed once, and the frames made from them (per group)."""

    __slots__ = (
        "all_binds",
        "binds",
        "changes",
        "errors",
        "frames",
        "lmids",
        "pairs",
        "private",
        "public",
        "streaming",
        "version",
    )

    def __init__(self, version: int) -> None:
        self.version = version
        #: Ops of public rows, and of private rows by namespace.
        self.public: list[Any] = []
        self.private: dict[str, list[Any]] = {}
        #: The raw changes (for sessions that lag), public and by namespace.
        self.changes: dict[str, dict[RowKey, Change]] = {}
        #: ``(binding, suffix)`` per op while every public op is an append to a bound row.
        self.pairs: list[tuple[Binding, str]] | None = []
        #: Handles bound in this flush.
        self.binds: list[Binding] = []
        #: ``binds`` and the handles of ``pairs`` (made on first use).
        self.all_binds: list[Binding] | None = None
        #: True once the flush holds a row bound to a handle (its bindings go in the poke).
        self.streaming = False
        self.lmids: dict[str, int] = {}
        self.errors: dict[str, list[MutationErrorReport]] = {}
        self.frames: dict[tuple[int | None, str, bool], SharedFrame] = {}


class Fanout:
    """The fan-out of one instance (module doc). ``sessions`` is the instance's live map of
    client id to session."""

    def __init__(
        self,
        sessions: dict[str, Session],
        *,
        deltas: bool = True,
        clock: Callable[[], float] | None = None,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
    ) -> None:
        self._sessions = sessions
        self._deltas = deltas
        self._replies: set[Session] = set()
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._call_later = call_later or (
            lambda delay, fn: asyncio.get_running_loop().call_later(delay, fn)
        )
        self._pending: dict[RowKey, Change] = {}
        self._lmids: dict[str, int] = {}
        self._errors: dict[str, list[MutationErrorReport]] = {}
        self._version = 0
        #: Version of the last flush: a following session has every visible change up to it.
        self.flushed = 0
        self._values: OrderedDict[RowKey, tuple[Any, int]] = OrderedDict()
        self._values_bytes = 0
        self._sent_at: dict[RowKey, float] = {}
        self.handles = AppendHandles()
        self._timer: Any = None
        #: Frames written by flushes, and flushes (for tests and benchmarks).
        self.frames_written = 0
        self.flushes = 0

    # -- commits ---------------------------------------------------------------------------

    def start(self, version: int) -> None:
        """The instance is at ``version`` and nothing was sent yet (sessions catch up first)."""
        self.flushed = self._version = version

    def on_commit(
        self,
        version: int,
        changes: dict[RowKey, Change],
        lmids: dict[str, int],
        errors: dict[str, list[MutationErrorReport]],
    ) -> None:
        """Queue a committed batch, then flush now or when the window of its rows is over."""
        pending = self._pending
        for key, change in changes.items():
            if key.ns != "s":  # server-only rows never leave the server
                pending[key] = change
        self._lmids.update(lmids)
        for cid, errs in errors.items():
            self._errors.setdefault(cid, []).extend(errs)
        self._version = version
        if self._timer is not None and len(pending) < MAX_FANOUT_ROWS:
            return  # a flush is due; it takes this commit too
        wait = self._window_left()
        if wait > 0 and len(pending) < MAX_FANOUT_ROWS:
            self._timer = self._call_later(wait, self._on_timer)
            return
        self.flush()

    def _window_left(self) -> float:
        if not self._deltas or not self._sent_at:
            return 0.0
        sent_at = self._sent_at
        latest = max((sent_at.get(k, -math.inf) for k in self._pending), default=-math.inf)
        return latest + ROW_INTERVAL - self._clock()

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def holds_after(self, version: int) -> bool:
        """True if commits newer than ``version`` wait for a flush."""
        return bool(self._pending or self._lmids or self._errors) and self._version > version

    def held_errors(self, client_id: str) -> list[MutationErrorReport]:
        """Error reports of ``client_id`` in commits the window still holds (a catch-up that
        confirms those mutations carries them too: the database keeps only the newest)."""
        return list(self._errors.get(client_id, ()))

    @property
    def deltas(self) -> bool:
        """False when rows always travel whole (``create_app(append_deltas=False)``)."""
        return self._deltas

    def reply_after_flush(self, session: Session) -> None:
        """Have ``session`` write its waiting replies once the pending flush is out."""
        self._replies.add(session)

    @property
    def holding(self) -> bool:
        """True while changes wait for a flush."""
        return self._timer is not None

    def close(self) -> None:
        """Cancel a pending flush (the instance is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- flushing --------------------------------------------------------------------------

    def flush(self) -> None:
        """Send everything queued: to following sessions at once, into lagging sessions'
        own queues (module doc)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending or self._lmids or self._errors:
            f = self._build()
            before = self.flushed
            self.flushed = f.version
            self.flushes += 1
            for session in list(self._sessions.values()):
                if not session.closed:
                    self._deliver(session, f, before)
        if self._replies:
            waiting, self._replies = self._replies, set()
            for session in waiting:
                session.release_replies()

    def _build(self) -> _Flush:
        pending, self._pending = self._pending, {}
        f = _Flush(self._version)
        f.lmids, self._lmids = self._lmids, {}
        f.errors, self._errors = self._errors, {}
        now = self._clock()
        deltas = self._deltas
        values = self._values
        handles = self.handles
        sent_at = self._sent_at
        for key, change in pending.items():
            ns = key.ns
            f.changes.setdefault(ns, {})[key] = change
            ops = f.public if ns == "" else f.private.setdefault(ns, [])
            last_sent = sent_at.get(key, -math.inf)
            if deltas:
                sent_at[key] = now
            if change is None:
                ops.append(del_op(key))
                self._forget(key)
                if ns == "":
                    handles.drop(key)
                    f.pairs = None
                continue
            sk, value, encoded, size = change
            prev = values.get(key)
            op = make_merge(key, sk, prev[0], value) if prev is not None and deltas else None
            ops.append(encoded if op is None else op)
            self._remember(key, value, size)
            if ns != "":
                continue
            if op is None:  # the whole row: no append to bind or stream
                f.pairs = None
                continue
            grown = _single_append(op)
            bound = handles.get(key) if grown is not None else None
            if (
                grown is not None
                and bound is not None
                and (bound.field, bound.sort_key)
                == (
                    grown[0],
                    sk,
                )
            ):
                handles.touch(key)
                f.streaming = True
                if f.pairs is not None:
                    f.pairs.append((bound, grown[1]))
                continue
            f.pairs = None
            if grown is not None and now - last_sent < STREAM_GAP:
                f.binds.append(handles.bind(key, grown[0], sk))
                f.streaming = True
        if len(sent_at) > 4 * VALUE_CACHE_ROWS:
            cutoff = now - STREAM_GAP
            self._sent_at = {k: t for k, t in sent_at.items() if t > cutoff}
        return f

    def _remember(self, key: RowKey, value: Any, size: int) -> None:
        values = self._values
        old = values.pop(key, None)
        if old is not None:
            self._values_bytes -= old[1]
        if type(value) is not dict:  # no delta applies to a non-object
            return
        values[key] = (value, size)
        self._values_bytes += size
        while len(values) > VALUE_CACHE_ROWS or (
            self._values_bytes > VALUE_CACHE_BYTES and len(values) > 1
        ):
            _, (_, n) = values.popitem(last=False)
            self._values_bytes -= n

    def _forget(self, key: RowKey) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self._values_bytes -= old[1]

    def _deliver(self, session: Session, f: _Flush, before: int) -> None:
        cid = session.client_id
        own = session.own_ns
        lmid = f.lmids.get(cid)
        errors = f.errors.get(cid)
        if errors and errors[0].id <= session.known_lmid:  # a catch-up already told of these
            errors = [e for e in errors if e.id > session.known_lmid] or None
        private = f.private.get(own)
        if not session.follows(before):
            session.enqueue(f.version, _visible(f.changes, own), lmid, errors)
            return
        if not f.public and not private and lmid is None and not errors:
            session.synced_to = f.version  # nothing it may see: its cookie stays
            return
        cookie = session.cookie
        own_key = own if private else ""
        key: tuple[int | None, str, bool]
        frame: SharedFrame | None = None
        # Every op an append to a row bound on this connection too: the compact frame.
        if (
            f.pairs
            and not private
            and lmid is None
            and not errors
            and cookie is not None
            and (f.version - cookie) % 10
            and session.knows(b for b, _ in f.pairs)
        ):
            key = (cookie, "", True)
            frame = f.frames.get(key)
            if frame is None:
                flat: list[Any] = []
                for b, suffix in f.pairs:
                    flat += (b.handle, suffix)
                frame = f.frames[key] = SharedFrame(append_frame(cookie, f.version, flat))
        elif lmid is None and not errors:
            key = (cookie, own_key, False)
            frame = f.frames.get(key)
            if frame is None:
                frame = f.frames[key] = SharedFrame(encode(self._poke(f, cookie, private)))
        else:  # this client's confirmation or rejections: its own frame
            key = (cookie, own_key, False)
            poke = self._poke(f, cookie, private)
            poke.last_mutation_id = lmid
            poke.errors = errors
            frame = SharedFrame(encode(poke))
        if len(frame.payload) > FRAME_BUDGET:
            # Too large for one frame: the session's queue sends it as a catch-up in parts.
            session.enqueue(f.version, _visible(f.changes, own), lmid, errors)
            return
        if session.write_now(frame):
            session.cookie = f.version
            session.synced_to = f.version
            if lmid is not None:
                session.known_lmid = lmid
            if f.streaming and not key[2]:  # an append frame binds nothing new
                session.learn(self._bindings(f))
            self.frames_written += 1
        else:  # the socket asked to pause: from now on this session sends from its queue
            session.enqueue(f.version, _visible(f.changes, own), lmid, errors)

    def _bindings(self, f: _Flush) -> list[Binding]:
        """The bindings a poke of this flush carries: new ones, and those its appends use
        (made once per flush)."""
        if not f.pairs:
            return f.binds
        if f.all_binds is None:
            f.all_binds = [*f.binds, *(b for b, _ in f.pairs)]
        return f.all_binds

    def _poke(self, f: _Flush, cookie: int | None, private: list[Any] | None) -> Poke:
        patch = f.public if not private else [*f.public, *private]
        binds = self._bindings(f) if f.streaming else []
        return Poke(
            base_cookie=cookie,
            cookie=f.version,
            patch=patch,
            bind=binds or None,
        )


def _visible(changes: dict[str, dict[RowKey, Change]], own: str) -> dict[RowKey, Change]:
    public = changes.get("", {})
    mine = changes.get(own)
    if not mine:
        return public
    return {**public, **mine}


def _single_append(op: MergeOp | None) -> tuple[str, str] | None:
    """``(field, suffix)`` if the merge ``op`` only appends to one field, else None."""
    if op is None or op.set or op.unset:
        return None
    append = op.append
    if append is None or len(append) != 1:
        return None
    ((field, suffix),) = append.items()
    return field, suffix


def ops_bytes(ops: list[Any]) -> int:
    """About how many bytes ``ops`` encode to (stored JSON: exact; others: estimated)."""
    return sum(len(o) if type(o) is msgspec.Raw else 256 for o in ops)
