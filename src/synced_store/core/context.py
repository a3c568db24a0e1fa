"""Mutation and read contexts, and the table handles mutators and queries use.

The same classes serve the client (over the in-memory store, recording reads: a synchronous
:class:`Tx`) and the server (over the instance database: an :class:`AsyncTx`, whose methods
are coroutines because a database may be a network round trip away). Everything below talks
to one of the two, so this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, Protocol

from ..errors import (
    PermissionDeniedError,
    ValidationError,
    ValueTooLargeError,
)
from ..schema import Schema, TableDef
from ..types import EntryKey, JSONValue, RowKey
from .around import AroundScan
from .external import ExternalMixin
from .keys import (
    MAX_INPUT_BYTES,
    PUBLIC,
    SERVER_ONLY,
    check_depth,
    check_key,
    check_value_size,
    encode_value,
    private_ns,
)
from .steps import run_sync

__all__ = [
    "AsyncTx",
    "MutationContext",
    "Platform",
    "ReadContext",
    "ScanResult",
    "TableHandle",
    "Tx",
    "copy_json",
    "json_input",
    "run_sync",
]

SEQ_TABLE = "$seq"
_MAX_CHAR = "\U0010ffff"
#: Rows an :class:`AsyncTx` scan asks for at a time.
SCAN_PAGE = 128


class Tx(Protocol):
    """What a context needs from a synchronous store: the client engine's (and tests').

    A client pass runs its mutator with :func:`run_sync`, so nothing here may suspend.
    """

    #: True when ``read``/``iterate`` return stored objects that must be copied before use.
    copy_on_read: bool
    #: Absent or False: this is a synchronous ``Tx`` (see :class:`AsyncTx`).
    is_async: Literal[False]

    def read(self, key: RowKey) -> tuple[str, Any] | None:
        """``(sort_key, value)`` of a row, or None."""

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        """Rows of one table in scan order from ``start``."""

    def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        """Upsert a row; ``encoded`` is the value's compact JSON."""

    def remove(self, key: RowKey) -> None:
        """Delete a row (no-op when absent)."""

    def note_point(self, key: RowKey) -> None:
        """Record a point read (for invalidation); may be a no-op."""

    def note_range(self, ns: str, table: str, low: EntryKey | None, high: EntryKey | None) -> None:
        """Record a scanned range (for invalidation); may be a no-op."""


class AsyncTx(Protocol):
    """What a context needs from an asynchronous store: the server's transaction (and an
    action's read-only view). Reads are not recorded (the server keeps no read sets)."""

    #: True when reads return stored objects that must be copied before use.
    copy_on_read: bool
    #: Always True: the handle awaits these methods.
    is_async: Literal[True]

    async def read(self, key: RowKey) -> tuple[str, Any] | None:
        """``(sort_key, value)`` of a row, or None."""

    async def scan(
        self,
        ns: str,
        table: str,
        start: EntryKey | None,
        *,
        exclusive: bool,
        reverse: bool,
        limit: int,
    ) -> list[tuple[EntryKey, Any]]:
        """At most ``limit`` rows of one table in scan order from ``start`` (fewer: the end)."""

    async def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        """Upsert a row; ``encoded`` is the value's compact JSON."""

    async def remove(self, key: RowKey) -> None:
        """Delete a row (no-op when absent)."""


class Platform(Protocol):
    """Platform services behind ``ctx.platform.call`` (server only)."""

    def call(self, name: str, input: Any) -> Any:
        """Call service ``name``; returns its result (an awaitable or async iterator)."""


class _ClientPlatform:
    def call(self, name: str, input: Any) -> Any:
        raise PermissionDeniedError(
            f"ctx.platform.call({name!r}) is server-only; guard it with `if ctx.is_server:`"
        )


_CONTAINERS = (dict, list)


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts and lists are copied, scalars shared)."""
    t = type(value)
    if t is dict:
        for v in value.values():
            if type(v) in _CONTAINERS:
                return {
                    k: (copy_json(v) if type(v) in _CONTAINERS else v) for k, v in value.items()
                }
        return value.copy()  # a flat object (the common row): one C-level copy
    if t is list:
        return [copy_json(v) if type(v) in _CONTAINERS else v for v in value]
    return value


def json_input(encode: Callable[[Any], tuple[Any, bytes]], value: Any, what: str) -> Any:
    """The value of ``encode(value)`` (a mutator's or action's ``input_encode``: validated,
    plain JSON, and its JSON bytes), refused with :class:`ValueTooDeepError` when it nests
    deeper than ``MAX_VALUE_DEPTH`` (the server refuses such input; see :func:`_validated` for
    why the given value decides when validation itself fails) and
    :class:`ValueTooLargeError` above ``MAX_INPUT_BYTES``."""
    try:
        out, data = encode(value)
    except ValidationError:
        check_depth(value, what=what)
        raise
    check_depth(out, what=what)
    size = len(data)
    if size > MAX_INPUT_BYTES:
        raise ValueTooLargeError(
            f"{what} is {size} bytes of JSON (limit {MAX_INPUT_BYTES}): a push frame must stay "
            "under the protocol's frame limit"
        )
    return out


def _to_entry(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, EntryKey | tuple) and len(key) == 2:
        return str(key[1])
    if isinstance(key, dict):
        item = key.get("item_key", key.get("itemKey"))
        if isinstance(item, str):
            return item
    raise ValidationError(f"a key must be a str or EntryKey, got {type(key).__name__}")


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: none)."""
    while prefix and prefix[-1] == _MAX_CHAR:
        prefix = prefix[:-1]
    if not prefix:
        return None
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class ScanResult:
    """The rows of a scan; ``await r.entries()`` / ``.keys()`` / ``.values()``, or ``async for``."""

    __slots__ = ("_handle", "_opts")

    def __init__(self, handle: TableHandle, opts: dict[str, Any]) -> None:
        self._handle = handle
        self._opts = opts

    async def entries(self) -> list[tuple[EntryKey, JSONValue]]:
        """``[(EntryKey, value), ...]`` in scan order."""
        return await self._handle._scan(**self._opts)

    async def keys(self) -> list[EntryKey]:
        """The EntryKeys in scan order."""
        return [k for k, _ in await self._handle._scan(**self._opts)]

    async def values(self) -> list[JSONValue]:
        """The values in scan order."""
        return [v for _, v in await self._handle._scan(**self._opts)]

    def __aiter__(self) -> _AsyncIter:
        return _AsyncIter(self._handle, self._opts)


class _AsyncIter:
    __slots__ = ("_handle", "_it", "_opts")

    def __init__(self, handle: TableHandle, opts: dict[str, Any]) -> None:
        self._handle = handle
        self._opts = opts
        self._it: Iterator[tuple[EntryKey, Any]] | None = None

    def __aiter__(self) -> _AsyncIter:
        return self

    async def __anext__(self) -> tuple[EntryKey, Any]:
        if self._it is None:  # the scan runs at the first step, as the rows are asked for
            self._it = iter(await self._handle._scan(**self._opts))
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None


def _validated(tdef: TableDef, table: str, item_key: str, value: Any) -> tuple[Any, bytes]:
    """``(plain-JSON value, its JSON bytes)`` of a row value, at most ``MAX_VALUE_DEPTH`` deep.

    The depth is checked on what validation produced (what is stored and synced). A value
    too deep for the validator itself (pydantic-core's recursion guard: 49 levels in Pyodide,
    255 natively) fails validation first: then the given value's depth decides the error, so
    a too-deep value raises :class:`ValueTooDeepError` on every platform.
    """
    what = f"value for {table}/{item_key}"
    try:
        out, data = tdef.validate_encoded(table, item_key, value)
    except ValidationError:
        check_depth(value, what=what)
        raise
    check_depth(out, what=what)
    return out, data


class TableHandle:
    """Async handle on one table in one namespace (public, a user's private, server-only)."""

    __slots__ = ("_async", "_atx", "_copy", "_def", "_ns", "_table", "_tx", "_writable")

    def __init__(
        self, tx: Tx | AsyncTx, ns: str, table: str, tdef: TableDef | None, writable: bool
    ) -> None:
        # One of the two is used, as ``_async`` says (the same object, typed twice; no cast()
        # call: a handle is made per table access).
        self._async: bool = getattr(tx, "is_async", False)
        self._tx: Tx = tx  # type: ignore[assignment]
        self._atx: AsyncTx = tx  # type: ignore[assignment]
        self._ns = ns
        self._table = table
        self._def = tdef
        self._writable = writable
        self._copy = tx.copy_on_read

    def _key(self, key: Any) -> RowKey:
        return RowKey(self._ns, self._table, _to_entry(key))

    async def get(self, key: str | EntryKey) -> JSONValue | None:
        """The row's value, or None."""
        rk = self._key(key)
        if self._async:
            row = await self._atx.read(rk)
        else:
            self._tx.note_point(rk)
            row = self._tx.read(rk)
        if row is None:
            return None
        return copy_json(row[1]) if self._copy else row[1]

    async def has(self, key: str | EntryKey) -> bool:
        """True if the row exists."""
        rk = self._key(key)
        if self._async:
            return await self._atx.read(rk) is not None
        self._tx.note_point(rk)
        return self._tx.read(rk) is not None

    async def set(self, item_key: Any, value: Any = None, *, sort_key: str | None = None) -> None:
        """Upsert a row: ``set(key, value, sort_key=...)``, ``set(EntryKey, value)`` or
        ``set({"item_key": ..., "value": ..., "sort_key": ...})`` (camelCase accepted)."""
        if not self._writable:
            raise PermissionDeniedError("this context is read-only; write through a mutator")
        if isinstance(item_key, dict) and value is None and "value" in item_key:
            spec = item_key
            item_key = spec.get("item_key", spec.get("itemKey"))
            value = spec["value"]
            if sort_key is None:
                sort_key = spec.get("sort_key", spec.get("sortKey"))
        elif isinstance(item_key, EntryKey):
            if sort_key is None:
                sort_key = item_key.sort_key
            item_key = item_key.item_key
        sk = "" if sort_key is None else sort_key
        check_key(self._table, item_key, sk)
        rk = RowKey(self._ns, self._table, item_key)
        if self._def is not None:  # validation already encodes the value: keep those bytes
            value, data = _validated(self._def, self._table, item_key, value)
            check_value_size(rk, data)
        else:
            check_depth(value, what=f"value for {self._table}/{item_key}")
            value = copy_json(value)
            data = encode_value(rk, value)
        if self._async:
            await self._atx.write(rk, sk, value, data)
        else:
            self._tx.write(rk, sk, value, data)

    async def delete(self, key: str | EntryKey) -> None:
        """Delete a row (no error if absent)."""
        if not self._writable:
            raise PermissionDeniedError("this context is read-only; write through a mutator")
        rk = self._key(key)
        check_key(self._table, rk.item)
        if self._async:
            await self._atx.remove(rk)
        else:
            self._tx.remove(rk)

    async def entries(self) -> list[tuple[EntryKey, JSONValue]]:
        """Every row as ``(EntryKey, value)`` in scan order."""
        return await self._scan()

    async def keys(self) -> list[EntryKey]:
        """Every EntryKey in scan order."""
        return [k for k, _ in await self._scan()]

    async def values(self) -> list[JSONValue]:
        """Every value in scan order."""
        return [v for _, v in await self._scan()]

    def scan(
        self,
        *,
        prefix: str | dict[str, str] | None = None,
        limit: int | None = None,
        cursor: EntryKey | str | None = None,
        reverse: bool = False,
        around_cursor: dict[str, int] | None = None,
    ) -> ScanResult | AroundScan:
        """Scan in ``(sort_key, item_key)`` order.

        Args:
            prefix: an item-key prefix (str) or ``{"item_key": ..., "sort_key": ...}``.
            limit: at most this many rows.
            cursor: start after this EntryKey (before it when ``reverse``); ``"$last"`` is the end.
            reverse: descending order.
            around_cursor: ``{"before": b, "after": a}`` rows around ``cursor`` (client only).
        """
        if around_cursor is not None:
            return AroundScan(self, prefix, cursor, around_cursor)
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValidationError("scan limit must be a non-negative int")
        return ScanResult(
            self, {"prefix": prefix, "limit": limit, "cursor": cursor, "reverse": reverse}
        )

    async def _scan(
        self,
        prefix: str | dict[str, str] | None = None,
        limit: int | None = None,
        cursor: EntryKey | str | None = None,
        reverse: bool = False,
    ) -> list[tuple[EntryKey, Any]]:
        ik_prefix = sk_prefix = ""
        if isinstance(prefix, str):
            ik_prefix = prefix
        elif isinstance(prefix, dict):
            ik_prefix = prefix.get("item_key", prefix.get("itemKey", "")) or ""
            sk_prefix = prefix.get("sort_key", prefix.get("sortKey", "")) or ""
        elif prefix is not None:
            raise ValidationError("scan prefix must be a str or a dict")
        exclusive = True
        start: EntryKey | None
        if cursor == "$last":
            if not reverse:
                return []
            start = None
        elif cursor is not None:
            if isinstance(cursor, str) or not (isinstance(cursor, tuple) and len(cursor) == 2):
                raise ValidationError("scan cursor must be an EntryKey or '$last'")
            start = EntryKey(str(cursor[0]), str(cursor[1]))
        elif sk_prefix:
            if reverse:
                succ = _successor(sk_prefix)
                start = None if succ is None else EntryKey(succ, "")
            else:
                start = EntryKey(sk_prefix, "")
            exclusive = reverse
        else:
            start = None
        out: list[tuple[EntryKey, Any]] = []
        if limit == 0:
            return out
        if self._async:
            await self._scan_pages(out, start, exclusive, reverse, limit, ik_prefix, sk_prefix)
            return out
        tx = self._tx
        rows = tx.iterate(self._ns, self._table, start, exclusive=exclusive, reverse=reverse)
        last, stopped = _collect(rows, out, reverse, limit, ik_prefix, sk_prefix, self._copy)
        # The scan depended on every position from its start to where it stopped (or the end).
        end = last if stopped else None
        if reverse:
            tx.note_range(self._ns, self._table, end, start)
        else:
            tx.note_range(self._ns, self._table, start, end)
        return out

    async def _scan_pages(
        self,
        out: list[tuple[EntryKey, Any]],
        start: EntryKey | None,
        exclusive: bool,
        reverse: bool,
        limit: int | None,
        ik_prefix: str,
        sk_prefix: str,
    ) -> None:
        """Fill ``out`` from an :class:`AsyncTx`, a page of rows at a time."""
        while True:
            want = SCAN_PAGE
            if limit is not None and not ik_prefix:  # every row read counts, or ends the scan
                want = min(SCAN_PAGE, limit - len(out))
            page = await self._atx.scan(
                self._ns, self._table, start, exclusive=exclusive, reverse=reverse, limit=want
            )
            last, stopped = _collect(page, out, reverse, limit, ik_prefix, sk_prefix, self._copy)
            if stopped or len(page) < want or last is None:
                return
            start, exclusive = last, True


def _collect(
    rows: Iterable[tuple[EntryKey, Any]],
    out: list[tuple[EntryKey, Any]],
    reverse: bool,
    limit: int | None,
    ik_prefix: str,
    sk_prefix: str,
    copy: bool,
) -> tuple[EntryKey | None, bool]:
    """Append the rows of a scan that match its prefixes to ``out``; returns the last row
    looked at and whether the scan is over (past the sort-key prefix, or at ``limit``)."""
    last: EntryKey | None = None
    for ek, value in rows:
        last = ek
        if sk_prefix and not ek.sort_key.startswith(sk_prefix):
            if (ek.sort_key < sk_prefix) if reverse else (ek.sort_key > sk_prefix):
                return last, True
            continue
        if ik_prefix and not ek.item_key.startswith(ik_prefix):
            continue
        out.append((ek, copy_json(value) if copy else value))
        if limit is not None and len(out) >= limit:
            return last, True
    return last, False


class _Namespace:
    __slots__ = ("_ctx", "_ns")

    def __init__(self, ctx: ReadContext, ns: str) -> None:
        self._ctx = ctx
        self._ns = ns

    def table(self, name: str) -> TableHandle:
        """Handle on table ``name`` in this namespace."""
        return self._ctx._handle(self._ns, name)


class ReadContext:
    """The context of queries (and, read-only, of actions): tables and the current user."""

    #: True in trusted system scope: hooks and data migrations (``server/members.py``).
    is_system = False

    def __init__(
        self,
        schema: Schema,
        tx: Tx | AsyncTx,
        user_id: str,
        *,
        is_server: bool,
        writable: bool = False,
    ) -> None:
        self.schema = schema
        self.tx = tx
        self.user_id = user_id
        self.is_server = is_server
        self._writable = writable

    def _handle(self, ns: str, name: str) -> TableHandle:
        if name == SEQ_TABLE:
            return TableHandle(self.tx, ns, name, None, False)
        try:
            tdef = self.schema.tables[name]
        except KeyError:
            from .system_tables import system_table  # it imports this module

            return system_table(self, ns, name)  # ``$users``, ``$user_info``: read-only
        return TableHandle(self.tx, ns, name, tdef, self._writable)

    def table(self, name: str) -> TableHandle:
        """Handle on the public rows of table ``name``."""
        return self._handle(PUBLIC, name)

    def private_of_user(self, user_id: str) -> _Namespace:
        """Rows of ``user_id``'s private namespace. Clients may only use their own user id."""
        ns = private_ns(user_id)
        if not self.is_server and user_id != self.user_id:
            raise PermissionDeniedError(
                f"user {self.user_id!r} may not access the private rows of {user_id!r}"
            )
        return _Namespace(self, ns)

    def server_only(self) -> _Namespace:
        """Server-only rows (never synced). Raises on clients: guard with ``ctx.is_server``."""
        if not self.is_server:
            raise PermissionDeniedError(
                "server_only() tables are not available on clients; guard with `if ctx.is_server:`"
            )
        return _Namespace(self, SERVER_ONLY)


class MutationContext(ExternalMixin, ReadContext):
    """The ``ctx`` a mutator receives, on a client pass (optimistic) or on the server."""

    def __init__(
        self,
        schema: Schema,
        tx: Tx | AsyncTx,
        user_id: str,
        *,
        is_server: bool,
        source: dict[str, Any] | None = None,
        platform: Platform | None = None,
    ) -> None:
        super().__init__(schema, tx, user_id, is_server=is_server, writable=True)
        self.source: dict[str, Any] = source or {"type": "user", "user_id": user_id}
        self.platform: Platform = platform if platform is not None else _ClientPlatform()
        #: Actions enqueued by this mutation, as ``(name, input JSON)`` (server passes only).
        self.enqueued: list[tuple[str, Any]] = []

    def enqueue_action(self, name: str, input: Any) -> None:
        """Schedule server action ``name`` to run after this mutation commits.

        A no-op on clients (the input is still validated, so mistakes show up at once).
        """
        adef = self.schema.action(name)
        args = json_input(adef.input_encode, input, f"input for action {name!r}")
        if self.is_server:
            self.enqueued.append((name, args))

    async def get_next_sort_key(self, namespace: str) -> str:
        """A sort key ``"{namespace}/{n:012d}"`` that grows with every call in this instance.

        The counter is an ordinary synced row, so the optimistic value is replaced by the
        server's on rebase, and concurrent or offline callers end with distinct keys.
        """
        if not isinstance(namespace, str) or not namespace or len(namespace) > 64:
            raise ValidationError("namespace must be a non-empty string of at most 64 chars")
        key = RowKey(PUBLIC, SEQ_TABLE, namespace)
        handle = self._handle(PUBLIC, SEQ_TABLE)
        value = await handle.get(key.item)
        n = (value if isinstance(value, int) else 0) + 1
        if handle._async:
            await handle._atx.write(key, "", n, str(n).encode())
        else:
            handle._tx.write(key, "", n, str(n).encode())
        return f"{namespace}/{n:012d}"
