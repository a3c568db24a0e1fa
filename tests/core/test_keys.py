"""Row namespaces, visibility and key / value limits."""

from __future__ import annotations

from typing import Any

import pytest

from synced_store import (
    KeyTooLargeError,
    PermissionDeniedError,
    ValidationError,
    ValueTooLargeError,
)
from synced_store.core.keys import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    PUBLIC,
    SERVER_ONLY,
    check_key,
    encode_value,
    is_visible_to,
    private_ns,
    unique_id,
)
from synced_store.types import RowKey


def test_limits() -> None:
    assert MAX_KEY_BYTES == 256
    assert MAX_VALUE_BYTES == 1024 * 1024
    assert PUBLIC == ""
    assert SERVER_ONLY == "s"


def test_private_ns() -> None:
    assert private_ns("alice") == "u:alice"
    assert private_ns("x" * 128) == "u:" + "x" * 128


@pytest.mark.parametrize("bad", ["", "a/b", "x" * 129, None, 5])
def test_private_ns_rejects_bad_user_ids(bad: Any) -> None:
    with pytest.raises(PermissionDeniedError, match="invalid user id"):
        private_ns(bad)


@pytest.mark.parametrize(
    ("ns", "user", "visible"),
    [
        (PUBLIC, "alice", True),
        ("u:alice", "alice", True),
        ("u:alice", "bob", False),
        ("u:alice", "alic", False),
        ("u:alic", "alice", False),
        (SERVER_ONLY, "alice", False),
        (SERVER_ONLY, "s", False),
        ("u:", "", True),  # degenerate, but private_ns never makes it
    ],
)
def test_is_visible_to(ns: str, user: str, visible: bool) -> None:
    assert is_visible_to(ns, user) is visible


@pytest.mark.parametrize(
    ("table", "item", "sk"),
    [
        ("t", "k" * 255, ""),
        ("t" * 100, "k" * 156, ""),
        ("t", "é" * 127, ""),  # 1 + 254 bytes
        ("t", "😀" * 63, ""),  # 1 + 252 bytes
        ("t", "k", "s" * 256),
        ("t", "k", "é" * 128),
        ("t", "", ""),
    ],
)
def test_check_key_accepts_keys_up_to_256_bytes(table: str, item: str, sk: str) -> None:
    check_key(table, item, sk)


@pytest.mark.parametrize(
    ("table", "item", "sk", "match"),
    [
        ("t", "k" * 256, "", "key t/"),
        ("t" * 200, "k" * 57, "", "longer than 256"),
        ("t", "é" * 128, "", "longer than 256"),  # 1 + 256 bytes
        ("t", "😀" * 64, "", "longer than 256"),  # 1 + 256 bytes, only 65 characters
        ("t", "k", "s" * 257, "sort key"),
        ("t", "k", "é" * 129, "sort key"),
    ],
)
def test_check_key_rejects_longer_keys(table: str, item: str, sk: str, match: str) -> None:
    with pytest.raises(KeyTooLargeError, match=match):
        check_key(table, item, sk)


@pytest.mark.parametrize(("item", "sk"), [(1, ""), (None, ""), ("k", None), ("k", 1)])
def test_check_key_rejects_non_strings(item: Any, sk: Any) -> None:
    with pytest.raises(ValidationError, match="must be a string"):
        check_key("t", item, sk)


@pytest.mark.parametrize("item", ["\ud800", "\ud800" * 70])
def test_check_key_rejects_keys_that_are_not_utf8(item: str) -> None:
    with pytest.raises(ValidationError):
        check_key("t", item)


def test_key_too_large_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        check_key("t", "k" * 300)


KEY = RowKey("", "t", "k")


def test_encode_value_is_compact_json() -> None:
    assert encode_value(KEY, {"a": [1, 2], "b": None}) == b'{"a":[1,2],"b":null}'
    assert encode_value(KEY, "é") == '"é"'.encode()


def test_encode_value_limit_is_inclusive() -> None:
    assert len(encode_value(KEY, "x" * (MAX_VALUE_BYTES - 2))) == MAX_VALUE_BYTES
    with pytest.raises(ValueTooLargeError, match="t/k is 1048577 bytes"):
        encode_value(KEY, "x" * (MAX_VALUE_BYTES - 1))


def test_encode_value_rejects_non_json() -> None:
    with pytest.raises(ValidationError, match="not JSON"):
        encode_value(KEY, {"x": object()})


def test_unique_ids_sort_in_the_order_they_were_made() -> None:
    ids = [unique_id("3f9a", n) for n in range(1, 50_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert unique_id("c", 9) < unique_id("c", 10) < unique_id("c", 35) < unique_id("c", 36)
    assert unique_id("c", 36**5 - 1) < unique_id("c", 36**5)
    assert unique_id("c", 1) == "c-a1"
    with pytest.raises(ValueError, match=">= 1"):
        unique_id("c", 0)


@pytest.mark.parametrize(("item", "sk"), [("a\x00b", ""), ("k", "\x00"), ("\x00", "\x00")])
def test_check_key_rejects_nul(item: str, sk: str) -> None:
    """No backend stores U+0000 in a key (PostgreSQL's text cannot), so none accepts it."""
    with pytest.raises(ValidationError, match="U\\+0000"):
        check_key("t", item, sk)
