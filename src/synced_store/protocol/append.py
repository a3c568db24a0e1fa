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

import msgspec

from ..errors import ProtocolError
from ..types import RowKey
from .messages import Binding, MergeOp, Poke

__all__ = ["MAX_HANDLES", "AppendDecoder", "AppendHandles", "append_frame"]

_encoder = msgspec.json.Encoder()

#: Handles per connection on the server (least recently used ones are rebound).
MAX_HANDLES = 256


class AppendHandles:
    """The server's handle table (least recently used first): for a connection, or shared by
    every connection of an instance (each then keeps which bindings it was told)."""

    def __init__(self, capacity: int = MAX_HANDLES) -> None:
        self._capacity = capacity
        self._rows: OrderedDict[RowKey, Binding] = OrderedDict()
        self._free: list[int] = []
        self._next = 0

    def get(self, key: RowKey) -> Binding | None:
        """The row's binding, if it has one."""
        return self._rows.get(key)

    def bind(self, key: RowKey, field: str, sort_key: str) -> Binding:
        """Bind ``(key, field)`` to a handle; returns the new binding (a new object, also when
        the row keeps its number: a connection told the old one must be told again)."""
        old = self._rows.pop(key, None)
        if old is not None:
            h = old.handle
        elif self._free:
            h = self._free.pop()
        elif self._next < self._capacity:
            h = self._next
            self._next += 1
        else:
            h = self._rows.popitem(last=False)[1].handle
        binding = Binding(h, key.ns, key.table, key.item, field, sort_key)
        self._rows[key] = binding
        return binding

    def touch(self, key: RowKey) -> None:
        """Mark a row's binding as just used."""
        self._rows.move_to_end(key)

    def drop(self, key: RowKey) -> None:
        """Forget a row's binding (it was deleted)."""
        old = self._rows.pop(key, None)
        if old is not None:
            self._free.append(old.handle)

    def clear(self) -> None:
        """Forget every binding."""
        self._rows.clear()
        self._free.clear()
        self._next = 0


def append_frame(base_cookie: int, cookie: int, pairs: list[Any]) -> bytes:
    """The append frame for the poke from ``base_cookie`` to ``cookie`` whose patch appends
    ``pairs`` (``handle, suffix, handle, suffix, ...``). ``cookie - base_cookie`` must not be a
    multiple of 10 (see the module doc)."""
    return _encoder.encode([base_cookie % 10, cookie - base_cookie, *pairs])


class AppendDecoder:
    """The client's side for one connection: the handle bindings pokes carried."""

    def __init__(self) -> None:
        self._handles: dict[int, tuple[str, str, str, str, str]] = {}

    def observe(self, poke: Poke) -> None:
        """Note an ordinary poke's handle bindings (call for every poke)."""
        if poke.bind:
            handles = self._handles
            for b in poke.bind:
                handles[b.handle] = (b.ns, b.table, b.item, b.field, b.sort_key)

    def expand(self, frame: list[Any], cookie: int | None) -> Poke:
        """The poke an append frame stands for, applied to a receiver at ``cookie``."""
        n = len(frame)
        check, delta = (frame[0], frame[1]) if n >= 4 and n % 2 == 0 else (None, None)
        if type(check) is not int or type(delta) is not int or delta < 1 or delta % 10 == 0:
            raise ProtocolError(f"malformed append frame: {frame!r:.200}")
        if cookie is None or cookie % 10 != check:
            raise ProtocolError(f"out-of-sequence append frame (check {check}, have {cookie})")
        patch: list[Any] = []
        for i in range(2, n, 2):
            h, suffix = frame[i], frame[i + 1]
            binding = self._handles.get(h) if type(h) is int else None
            if binding is None or type(suffix) is not str:
                raise ProtocolError(f"append frame: unknown handle or bad suffix {h!r:.50}")
            ns, table, item, field, sk = binding
            patch.append(MergeOp(ns=ns, t=table, k=item, sk=sk, append={field: suffix}))
        return Poke(base_cookie=cookie, cookie=cookie + delta, patch=patch)
