"""Row namespaces, and the limits on keys and values (size and nesting depth)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic_core

from ..errors import (
    KeyTooLargeError,
    PermissionDeniedError,
    ValidationError,
    ValueTooDeepError,
    ValueTooLargeError,
)
from ..types import RowKey

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
    "PUBLIC",
    "SERVER_ONLY",
    "check_depth",
    "check_key",
    "check_value_size",
    "encode_value",
    "is_visible_to",
    "private_ns",
    "unique_id",
]

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 1024 * 1024
#: How deep arrays and objects may nest in any JSON value the engine carries: a row value,
#: mutation args, an action's input. A scalar has depth 0, ``{"a": 1}`` and ``[1]`` depth 1,
#: ``{"a": [1]}`` depth 2. The tightest parser on the way is pydantic-core compiled to wasm in
#: the browser (Pyodide): its recursion guard refuses 49 levels in validation and in
#: ``to_json``; natively the guard is 255, ``from_json`` (the server's frame parser) stops at
#: 200 and orjson's ``dumps`` at 254, and a frame wraps a value in 3-4 more levels
#: (push -> mutations -> mutation -> args, poke -> patch -> op -> v). 32 leaves 16 levels
#: under the tightest of them, is as deep as DynamoDB allows, and keeps every recursive walk
#: of a value (copy, compare, merge) far from Python's recursion limit.
#: The browser shell (web/static/synced-store.js) repeats it as ``MAX_VALUE_DEPTH``.
MAX_VALUE_DEPTH = 32
#: Largest JSON encoding of one mutation's or action's input, in bytes: one input alone in a
#: push frame stays well under the protocol's 8 MiB frame limit.
MAX_INPUT_BYTES = 4 * 1024 * 1024
PUBLIC = ""
SERVER_ONLY = "s"


def private_ns(user_id: str) -> str:
    """The namespace of ``user_id``'s private rows. User ids must be non-empty without ``/``."""
    if not isinstance(user_id, str) or not user_id or "/" in user_id or len(user_id) > 128:
        raise PermissionDeniedError(f"invalid user id {user_id!r} for private rows")
    return "u:" + user_id


def is_visible_to(ns: str, user_id: str) -> bool:
    """True if rows in ``ns`` may be sent to ``user_id``'s clients."""
    return ns == PUBLIC or (ns.startswith("u:") and ns[2:] == user_id)


def _utf8_len(s: str, what: str) -> int:
    if s.isascii():  # one byte per character, and no surrogates
        return len(s)
    try:
        return len(s.encode())
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid UTF-8 text (lone surrogate)") from None


def check_key(table: str, item_key: Any, sort_key: Any = "") -> None:
    """Raise unless the keys are UTF-8 strings without U+0000 (PostgreSQL's text cannot hold
    it, so no backend takes it) and table + item key (and sort key) fit in 256 bytes."""
    if not isinstance(item_key, str):
        raise ValidationError(f"item key must be a string, got {type(item_key).__name__}")
    if not isinstance(sort_key, str):
        raise ValidationError(f"sort key must be a string, got {type(sort_key).__name__}")
    if "\x00" in item_key or "\x00" in sort_key:
        raise ValidationError("keys may not contain U+0000")
    if len(table) + _utf8_len(item_key, "item key") > MAX_KEY_BYTES:
        raise KeyTooLargeError(
            f"key {table}/{item_key[:40]}... is longer than {MAX_KEY_BYTES} bytes"
        )
    if _utf8_len(sort_key, "sort key") > MAX_KEY_BYTES:
        raise KeyTooLargeError(f"sort key {sort_key[:40]}... is longer than {MAX_KEY_BYTES} bytes")


def encode_value(key: RowKey, value: Any) -> bytes:
    """Compact JSON bytes of ``value``; raises :class:`ValueTooLargeError` above 1 MiB."""
    try:
        data = pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise ValidationError(f"value for {key.table}/{key.item} is not JSON: {exc}") from None
    check_value_size(key, data)
    return data


_SCALARS = frozenset({str, int, float, bool, type(None)})


def check_depth(value: Any, limit: int = MAX_VALUE_DEPTH, what: str = "value") -> None:
    """Raise :class:`ValueTooDeepError` if arrays and objects nest more than ``limit`` deep in
    ``value`` (a scalar has depth 0, ``[1]`` depth 1).

    Cheap where it runs most (every ``set``): a scalar returns at once, a flat object or array
    after one C-level pass over its members. A deeper value is walked depth first without
    recursion, holding one iterator per level, and never more than ``limit`` levels down.
    Objects other than mappings, lists and tuples (a pydantic model, say) count as leaves.
    """
    t = type(value)
    if t is dict:
        members: Any = value.values()
    elif t is list or t is tuple:
        members = value
    elif t in _SCALARS:
        return
    elif isinstance(value, Mapping):
        members = value.values()
    elif isinstance(value, list | tuple):
        members = value
    else:
        return
    if limit < 1:
        raise _too_deep(what, limit)
    if _SCALARS.issuperset(map(type, members)):  # flat: the common row
        return
    stack = [iter(members)]  # stack[i] iterates the members of a container at depth i + 1
    while stack:
        for v in stack[-1]:
            tv = type(v)
            if tv is dict:
                child: Any = v.values()
            elif tv is list or tv is tuple:
                child = v
            elif tv in _SCALARS:
                continue
            elif isinstance(v, Mapping):
                child = v.values()
            elif isinstance(v, list | tuple):
                child = v
            else:
                continue
            if len(stack) >= limit:
                raise _too_deep(what, limit)
            stack.append(iter(child))
            break
        else:
            stack.pop()


def _too_deep(what: str, limit: int) -> ValueTooDeepError:
    return ValueTooDeepError(f"{what} nests more than {limit} levels of arrays/objects")


def check_value_size(key: RowKey, data: bytes) -> None:
    """Raise :class:`ValueTooLargeError` if a row's JSON bytes exceed 1 MiB."""
    if len(data) > MAX_VALUE_BYTES:
        raise ValueTooLargeError(
            f"value for {key.table}/{key.item} is {len(data)} bytes (limit {MAX_VALUE_BYTES})"
        )


_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def unique_id(client_id: str, counter: int) -> str:
    """The ``counter``-th unique id of a client: ``"<client id>-<n>"``, where ``n`` is the
    counter in base 36 after a letter giving its length (``a`` one digit, ``b`` two, ...), so a
    client's ids sort in the order they were made as plain strings ("…-a9" < "…-aa" <
    "…-b10"), whatever their number."""
    if counter < 1:
        raise ValueError("counter must be >= 1")
    digits = ""
    n = counter
    while n:
        n, d = divmod(n, 36)
        digits = _DIGITS[d] + digits
    return f"{client_id}-{chr(ord('a') + len(digits) - 1)}{digits}"
