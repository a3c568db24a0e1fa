"""Type aliases shared by every layer (the contract between them)."""

from __future__ import annotations

from typing import Any, NamedTuple, TypeAlias

__all__ = ["ClientID", "Cookie", "EntryKey", "JSONValue", "MutationID", "RowKey", "UserID"]

#: A JSON value: dict / list / str / int / float / bool / None (nested).
JSONValue: TypeAlias = Any
ClientID: TypeAlias = str
UserID: TypeAlias = str
MutationID: TypeAlias = int
#: The instance version a client has seen; ``None`` means "nothing yet".
Cookie: TypeAlias = int | None


class EntryKey(NamedTuple):
    """The position of a row in scan order: ``(sort_key, item_key)``."""

    sort_key: str
    item_key: str


class RowKey(NamedTuple):
    """The identity of a row: visibility namespace, table and item key.

    ``ns`` is ``""`` for public rows, ``"u:<user_id>"`` for a user's private rows and ``"s"``
    for server-only rows (which never leave the server).
    """

    ns: str
    table: str
    item: str
