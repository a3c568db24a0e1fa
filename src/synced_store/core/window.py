"""Windowed tables on the client: what it holds of them, paging older rows in, eviction.

A schema's ``pull_windows`` (``{table: N}``) make the server's reset carry only the latest N
rows of each windowed table (server/windows.py). The engine then holds each windowed table
``(namespace, table)`` as **one run of rows**: every row from its *floor* (the oldest row it
holds) up to the newest, and nothing below. Everything here keeps that true:

* **Changes below the floor are dropped** (:meth:`ClientWindows.filter`, before a poke is
  applied): a ``set`` of a row the client does not hold whose position is below the floor, a
  ``merge`` or append (a delta) of a row it does not hold, a ``del`` of a row it does not hold
  (a no-op anyway). Such a row is read fresh from the server when it is paged in. Rows the
  client holds, and rows at or above the floor (new messages), apply as usual. A table the
  client holds whole (paging reached its first row) takes every change.
* **Paging** (:meth:`begin_page`, :meth:`page_ops`): the ``$scan`` query returns committed
  rows before the floor, newest first. Changes to rows of that range which arrive while the
  query is in flight (and until its result is applied) are dropped by the rule above, so the
  result could be older than the server for them: the engine records them, and the page is
  cut at the newest such row (only the rows above it are added; the next page reads the rest
  fresh). A page whose floor moved meanwhile (a reset, an eviction) is discarded. So pages add
  rows without a gap or a duplicate while new rows arrive at the top.
* **Eviction** (:meth:`after_update`): the bytes of windowed rows held are counted (the
  values' JSON size; a merge adds its delta's); above 1.2 x the budget (``pull_max_bytes``)
  the oldest rows are removed, from the floor up, down to the budget (not while a page is in
  flight: then when the last one ends). Never the newest N of a
  window, and never a row a pending mutation read or wrote (eviction stops there: the run
  stays one run). Evicted rows are re-read when paged in again. Paging is a request to hold
  more: a page raises the budget to what is then held (as the spec's "load more" raises
  ``pullMaxBytes``); lower it again (``client.pull_max_bytes``) to let eviction trim.

What a mutator sees of a windowed table on the client is what the client holds: a read of a
row below the floor finds nothing, a scan stops at the floor. The server runs the same
mutator on every row and is authoritative: the client's optimistic result is replaced by the
server's when the mutation is confirmed (docs/guarantees.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import pydantic_core

from ..protocol.messages import DelOp, MergeOp, MutationErrorReport, PatchOp, SetOp
from ..types import EntryKey, RowKey
from .keys import private_ns

if TYPE_CHECKING:
    from .client_engine import ClientEngine

__all__ = ["EVICT_RATIO", "ClientWindows", "PageToken"]

#: Eviction starts when the windowed rows held exceed this many times the budget.
EVICT_RATIO = 1.2


class PageToken(NamedTuple):
    """What a page request was made against (see :meth:`ClientWindows.begin_page`)."""

    ns: str
    table: str
    floor: EntryKey | None
    generation: int
    seq: int


def _size(value: Any) -> int:
    return len(pydantic_core.to_json(value))


class ClientWindows:
    """The windowed tables of one :class:`~synced_store.core.client_engine.ClientEngine`."""

    def __init__(self, engine: ClientEngine) -> None:
        self._engine = engine
        schema = engine.schema
        #: Windowed tables and their N.
        self.windows: dict[str, int] = dict(schema.pull_windows)
        #: Storage budget in bytes of windowed rows (``pull_max_bytes``; settable).
        self.budget = schema.pull_max_bytes
        #: ``(ns, table)`` held whole: paging reached the table's first row.
        self.complete: set[tuple[str, str]] = set()
        #: Bumped when floors move up or the rows are replaced (a reset, an eviction).
        self.generation = 0
        #: Set by the engine from a reset's ``windows``: the windows it cut short.
        self.cut: list[list[str]] | None = None
        self._bypass = False
        self._sizes: dict[RowKey, int] | None = None
        self._bytes = 0
        self._pages = 0  # page requests in flight
        self._seq = 0
        self._dropped: list[tuple[int, RowKey, EntryKey | None]] = []

    # -- what is held -----------------------------------------------------------------------

    def _snapshot(self, key: RowKey) -> tuple[str, Any] | None:
        originals = self._engine._originals
        if key in originals:
            return originals[key]
        return self._engine.store.get(key)

    def floor(self, ns: str, table: str) -> EntryKey | None:
        """The oldest row of a windowed table the snapshot holds (None: none)."""
        engine = self._engine
        originals = engine._originals
        best: EntryKey | None = None
        for ek, _ in engine.store.iterate(ns, table, None, exclusive=False, reverse=False):
            if RowKey(ns, table, ek.item_key) not in originals:
                best = ek
                break
        for key, row in originals.items():
            if row is not None and key.ns == ns and key.table == table:
                ek = EntryKey(row[0], key.item)
                if best is None or ek < best:
                    best = ek
        return best

    @property
    def held_bytes(self) -> int:
        """Bytes of windowed rows held (the values' JSON size)."""
        self._ensure_sizes()
        return self._bytes

    def _ensure_sizes(self) -> None:
        if self._sizes is not None:
            return
        sizes: dict[RowKey, int] = {}
        for key, _, value in self._engine.snapshot_rows():
            if key.table in self.windows:
                sizes[key] = _size(value)
        self._sizes = sizes
        self._bytes = sum(sizes.values())

    def _account(self, key: RowKey, size: int | None) -> None:
        sizes = self._sizes
        assert sizes is not None
        old = sizes.pop(key, 0)
        self._bytes -= old
        if size is not None:
            sizes[key] = size
            self._bytes += size

    # -- server updates ---------------------------------------------------------------------

    def filter(self, patch: list[PatchOp], reset: bool) -> list[PatchOp]:
        """The ops of a server update the engine applies: those below a floor are dropped
        (module doc). Called by the engine before it applies ``patch``."""
        windows = self.windows
        if reset:
            self.generation += 1
            # A window the reset did not cut short holds the whole table.
            short = {(c[0], c[1]) for c in self.cut or () if len(c) == 4}
            own = private_ns(self._engine.user_id)
            self.complete = {(ns, t) for ns in ("", own) for t in windows} - short
            self.cut = None
            self._sizes = {}
            self._bytes = 0
            return self._account_all(patch)
        self._ensure_sizes()
        if self._bypass:
            return self._account_all(patch)
        out: list[PatchOp] = []
        floors: dict[tuple[str, str], EntryKey | None] = {}
        for op in patch:
            if op.t not in windows:
                out.append(op)
                continue
            key = RowKey(op.ns, op.t, op.k)
            held = self._snapshot(key) is not None
            tk = (op.ns, op.t)
            keep = held or (type(op) is SetOp and tk in self.complete)
            # A set may add a row at or above the floor; a held row may move (set or merge).
            positioned = isinstance(op, SetOp) or (held and isinstance(op, MergeOp))
            if isinstance(op, SetOp | MergeOp) and positioned and tk not in self.complete:
                if tk not in floors:
                    floors[tk] = self.floor(op.ns, op.t)
                fl = floors[tk]
                below = fl is not None and EntryKey(op.sk, op.k) < fl
                if held and below:  # a held row moving below the floor leaves the run
                    op = DelOp(t=op.t, k=op.k, ns=op.ns)
                keep = held or not below
            if keep:
                out.append(op)
                if type(op) is SetOp:
                    self._account(key, _size(op.v))
                elif type(op) is DelOp:
                    self._account(key, None)
                elif held:
                    assert type(op) is MergeOp
                    grow = sum(len(s) for s in (op.append or {}).values())
                    if op.set:
                        grow += _size(op.set)
                    self._account(key, (self._sizes or {}).get(key, 0) + grow)
            elif self._pages:
                sk = EntryKey(op.sk, op.k) if isinstance(op, SetOp | MergeOp) else None
                self._dropped.append((self._seq, key, sk))
        return out

    def _account_all(self, patch: list[PatchOp]) -> list[PatchOp]:
        """Count the windowed rows ``patch`` sets or deletes, keeping all of it."""
        windows = self.windows
        for op in patch:
            if op.t in windows:
                key = RowKey(op.ns, op.t, op.k)
                self._account(key, _size(op.v) if type(op) is SetOp else None)
        return patch

    def apply(
        self,
        cookie: int,
        patch: list[PatchOp],
        last_mutation_id: int | None,
        errors: list[MutationErrorReport] | tuple[()],
        reset: bool,
    ) -> None:
        """The engine's ``apply_server_update`` for a schema with windows: drop what is
        below a floor, apply the rest, then evict if over budget."""
        patch = self.filter(patch, reset)
        self._engine._apply_server_update(cookie, patch, last_mutation_id, errors, reset)
        self.after_update()

    def after_update(self) -> None:
        """Evict the oldest windowed rows if over 1.2 x the budget (module doc). Called by the
        engine after each server update, and when the last page in flight ends: eviction
        waits for pages in flight (it would move their floor and make them ask again, so rows
        arriving fast could starve paging)."""
        if self._bypass or self._pages or self.held_bytes <= self.budget * EVICT_RATIO:
            return
        ops = self._evictions()
        if ops:
            self.generation += 1
            self._apply(ops)

    def _protected(self, key: RowKey, sk: str) -> bool:
        probe = {key: (sk,)}
        for m in self._engine.pending:
            if key in m.writes or (m.reads and m.reads.intersects(probe)):
                return True
        return False

    def _evictions(self) -> list[PatchOp]:
        engine = self._engine
        sizes = self._sizes or {}
        target = self._bytes - self.budget
        ops: list[PatchOp] = []
        tables = {(k.ns, k.table) for k in sizes}
        for ns, table in sorted(tables):
            if target <= 0:
                break
            keep = self.windows[table]
            held = [
                ek
                for ek, _ in engine.store.iterate(ns, table, None, exclusive=False, reverse=False)
                if RowKey(ns, table, ek.item_key) in sizes
            ]
            evicted = False
            for ek in held[: max(0, len(held) - keep)]:
                if target <= 0:
                    break
                key = RowKey(ns, table, ek.item_key)
                if key in engine._originals or self._protected(key, ek.sort_key):
                    break
                ops.append(DelOp(t=table, k=ek.item_key, ns=ns))
                target -= sizes.get(key, 0)
                evicted = True
            if evicted:
                self.complete.discard((ns, table))
        return ops

    def _apply(self, ops: list[PatchOp]) -> None:
        engine = self._engine
        assert engine.cookie is not None
        self._bypass = True
        try:
            engine.apply_server_update(cookie=engine.cookie, patch=ops, last_mutation_id=None)
        finally:
            self._bypass = False

    # -- paging -----------------------------------------------------------------------------

    def begin_page(self, ns: str, table: str) -> PageToken:
        """Note a ``$scan`` request for rows below the current floor of ``(ns, table)``: from
        now on, changes dropped below the floor are recorded for :meth:`apply_page`. Pair with
        :meth:`end_page`."""
        if table not in self.windows:
            raise ValueError(f"table {table!r} is not windowed")
        self._pages += 1
        self._seq += 1
        return PageToken(ns, table, self.floor(ns, table), self.generation, self._seq)

    def end_page(self) -> None:
        """A page request is over (applied, discarded or failed); the last one to end runs
        the eviction the updates meanwhile left waiting."""
        self._pages -= 1
        if not self._pages:
            self._dropped.clear()
            self.after_update()

    def apply_page(self, token: PageToken, rows: list[list[Any]], more: bool) -> int | None:
        """Add a ``$scan`` result (``[sort_key, item_key, value]``, newest first) below the
        floor. Returns the number of rows added, or None if the page must be asked again (the
        floor moved, or every row in it changed while it was in flight)."""
        ns, table = token.ns, token.table
        if token.generation != self.generation or self.floor(ns, table) != token.floor:
            return None
        cut: EntryKey | None = None
        by_item = {r[1]: EntryKey(r[0], r[1]) for r in rows}
        for seq, key, ek in self._dropped:
            if seq < token.seq or key.ns != ns or key.table != table:
                continue
            if ek is None:
                ek = by_item.get(key.item)
            if ek is not None and (token.floor is None or ek < token.floor):
                cut = ek if cut is None or ek > cut else cut
        ops: list[PatchOp] = []
        for sk, item, value in rows:
            ek = EntryKey(sk, item)
            if cut is not None and ek <= cut:
                break
            if token.floor is not None and ek >= token.floor:
                continue  # not below the floor: the server's rows moved (never expected)
            if self._snapshot(RowKey(ns, table, item)) is None:
                ops.append(SetOp(t=table, k=item, v=value, ns=ns, sk=sk))
        if cut is not None and not ops:
            return None
        if ops:
            self._apply(ops)
            # Paging asks to hold more: the budget grows to what is held (spec: "load more"
            # raises pullMaxBytes), so the page is not evicted by the next update.
            self.budget = max(self.budget, self.held_bytes)
        if not more and cut is None:
            self.complete.add((ns, table))
        return len(ops)
