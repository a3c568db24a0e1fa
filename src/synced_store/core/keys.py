"""Row namespaces and key limits."""

from __future__ import annotations

from typing import Any

import pydantic_core

from ..errors import KeyTooLargeError, PermissionDeniedError, ValidationError, ValueTooLargeError
from ..types import RowKey

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "PUBLIC",
    "SERVER_ONLY",
    "check_key",
    "check_value_size",
    "encode_value",
    "is_visible_to",
    "private_ns",
]

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 1024 * 1024
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
    """Raise unless the keys are UTF-8 strings and table + item key (and sort key) fit in
    256 bytes."""
    if not isinstance(item_key, str):
        raise ValidationError(f"item key must be a string, got {type(item_key).__name__}")
    if not isinstance(sort_key, str):
        raise ValidationError(f"sort key must be a string, got {type(sort_key).__name__}")
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


def check_value_size(key: RowKey, data: bytes) -> None:
    """Raise :class:`ValueTooLargeError` if a row's JSON bytes exceed 1 MiB."""
    if len(data) > MAX_VALUE_BYTES:
        raise ValueTooLargeError(
            f"value for {key.table}/{key.item} is {len(data)} bytes (limit {MAX_VALUE_BYTES})"
        )
