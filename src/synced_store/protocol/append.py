"""Append frames: the compact wire form of a streamed string's next bytes.

A reply streamed by an action grows one row by a few bytes many times a second. As an ordinary
poke every such step costs ~100 bytes of envelope for ~4 bytes of text, so the server names a
streaming ``(row, field)`` once per connection with a small integer **handle** and then sends
each step as a JSON array::

    [check, cookie_delta, handle, suffix, handle, suffix, ...]

meaning: a poke from the receiver's cookie ``c`` to ``c + cookie_delta`` whose patch appends
each ``suffix`` to its handle's field (the row's sort key unchanged). ``check`` is the base
cookie ``% 10`` as the server saw it, and the server never sends a frame whose ``cookie_delta``
is a multiple of 10: a frame delivered twice in a row always fails the check, and one that does
not continue from the receiver's cookie fails it unless the gap is a multiple of 10. Over one
WebSocket neither happens (TCP delivers once and in order); the check is a safety net that
costs one digit, where a full base cookie would cost ~25% more bytes on a deflated stream of
token-sized chunks (its changing digits break deflate's matches between consecutive frames).

Handles are bound in an ordinary poke's ``bind`` list::

    {"type": "poke", ..., "bind": [[handle, ns, table, item, field, sort_key], ...]}

Bindings live as long as the connection; the server rebinds a number before reusing it.
:class:`AppendHandles` is the server's side (which rows have handles), :class:`AppendDecoder`
the client's (expanding an append frame back into the poke it stands for).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ..errors import ProtocolError
from ..types import RowKey

__all__ = ["MAX_HANDLES", "AppendDecoder", "AppendHandles", "Binding"]

#: Handles per connection on the server (least recently used ones are rebound).
MAX_HANDLES = 256

#: ``(handle, field, sort_key)`` the server bound a row to.
Binding = tuple[int, str, str]


class AppendHandles:
    """The server's handle table for one connection (least recently used first)."""

    def __init__(self, capacity: int = MAX_HANDLES) -> None:
        self._capacity = capacity
        self._rows: OrderedDict[RowKey, Binding] = OrderedDict()
        self._free: list[int] = []
        self._next = 0

    def get(self, key: RowKey) -> Binding | None:
        """The row's binding, if it has one."""
        return self._rows.get(key)

    def bind(self, key: RowKey, field: str, sort_key: str) -> list[Any]:
        """Bind ``(key, field)`` to a handle; returns the ``bind`` entry to send."""
        old = self._rows.pop(key, None)
        if old is not None:
            h = old[0]
        elif self._free:
            h = self._free.pop()
        elif self._next < self._capacity:
            h = self._next
            self._next += 1
        else:
            h = self._rows.popitem(last=False)[1][0]
        self._rows[key] = (h, field, sort_key)
        return [h, key.ns, key.table, key.item, field, sort_key]

    def touch(self, key: RowKey) -> None:
        """Mark a row's binding as just used."""
        self._rows.move_to_end(key)

    def drop(self, key: RowKey) -> None:
        """Forget a row's binding (it was deleted or rewritten)."""
        old = self._rows.pop(key, None)
        if old is not None:
            self._free.append(old[0])

    def clear(self) -> None:
        """Forget every binding (after a full re-send)."""
        self._rows.clear()
        self._free.clear()
        self._next = 0


class AppendDecoder:
    """The client's side for one connection: the handle bindings pokes carried."""

    def __init__(self) -> None:
        self._handles: dict[int, tuple[str, str, str, str, str]] = {}

    def observe(self, poke: dict[str, Any]) -> None:
        """Note an ordinary poke's handle bindings (call for every poke frame)."""
        binds = poke.get("bind")
        if binds is not None:
            if type(binds) is not list:
                raise ProtocolError("poke 'bind' must be a list")
            for b in binds:
                if (
                    type(b) is not list
                    or len(b) != 6
                    or type(b[0]) is not int
                    or not all(type(x) is str for x in b[1:])
                ):
                    raise ProtocolError(f"malformed handle binding: {b!r:.200}")
                self._handles[b[0]] = (b[1], b[2], b[3], b[4], b[5])

    def expand(self, frame: list[Any], cookie: int | None) -> dict[str, Any]:
        """The poke an append frame stands for, applied to a receiver at ``cookie``."""
        n = len(frame)
        check, delta = (frame[0], frame[1]) if n >= 4 and n % 2 == 0 else (None, None)
        if type(check) is not int or type(delta) is not int or delta < 1 or delta % 10 == 0:
            raise ProtocolError(f"malformed append frame: {frame!r:.200}")
        if cookie is None or cookie % 10 != check:
            raise ProtocolError(f"out-of-sequence append frame (check {check}, have {cookie})")
        patch: list[dict[str, Any]] = []
        for i in range(2, n, 2):
            h, suffix = frame[i], frame[i + 1]
            binding = self._handles.get(h) if type(h) is int else None
            if binding is None or type(suffix) is not str:
                raise ProtocolError(f"append frame: unknown handle or bad suffix {h!r:.50}")
            ns, table, item, field, sk = binding
            op: dict[str, Any] = {"op": "merge", "t": table, "k": item, "append": {field: suffix}}
            if ns:
                op["ns"] = ns
            if sk:
                op["sk"] = sk
            patch.append(op)
        return {"type": "poke", "base_cookie": cookie, "cookie": cookie + delta, "patch": patch}
