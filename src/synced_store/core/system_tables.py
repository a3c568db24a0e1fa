"""The system tables every instance has: ``$users`` (its members) and ``$user_info``.

Clients and mutators read them like any table (``ctx.table("$users")``, ``store.query``,
``subscribe_to_table``); nobody writes them through a table handle: only the server's members
API (``synced_store.server.members``, ``synced-store members``) does, with a handle made here.
Their rows are public rows of the instance, so they sync to its clients like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import PermissionDeniedError, UnknownNameError
from ..schema import TableDef, table
from .context import AsyncTx, TableHandle, Tx
from .keys import PUBLIC

if TYPE_CHECKING:
    from ..types import EntryKey, JSONValue
    from .context import ReadContext

__all__ = [
    "SYSTEM_TABLES",
    "USERS",
    "USER_INFO",
    "Member",
    "SystemTableHandle",
    "UserInfo",
    "system_table",
]

USERS = "$users"
USER_INFO = "$user_info"


class Member(BaseModel):
    """A row of ``$users`` (keyed by user id): a member of the instance."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=128)
    #: Free text the app interprets (``"owner"``, ``"member"``, ...), 1-64 characters.
    role: str = Field(min_length=1, max_length=64)
    #: When the user became a member (Unix time, seconds).
    joined_at: float
    #: Who added it: ``"system"`` (the API, the CLI), ``"creator"``, ``"auto_join"``.
    added_by: str = Field(max_length=128)


class UserInfo(BaseModel):
    """A row of ``$user_info`` (keyed by user id); kept after the user leaves."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=128)
    display_name: str = Field(max_length=200)
    avatar_url: str = Field(default="", max_length=2048)


#: The system tables and the models of their rows.
SYSTEM_TABLES: dict[str, TableDef] = {USERS: table(Member), USER_INFO: table(UserInfo)}


class SystemTableHandle(TableHandle):
    """A handle on a system table: read-only unless made by the members API."""

    __slots__ = ()

    def _refuse(self) -> None:
        if not self._writable:
            raise PermissionDeniedError(
                f"table {self._table!r} is a system table: clients, mutators and actions read it; "
                "it changes only through the server's members API (add_members, "
                "remove_members, set_user_info) or `synced-store members`"
            )

    async def set(self, item_key: Any, value: Any = None, *, sort_key: str | None = None) -> None:
        """Refused unless written by the members API (see :meth:`_refuse`)."""
        self._refuse()
        await super().set(item_key, value, sort_key=sort_key)

    async def delete(self, key: str | EntryKey) -> None:
        """Refused unless written by the members API."""
        self._refuse()
        await super().delete(key)

    async def rows(self) -> list[tuple[EntryKey, JSONValue]]:
        """Every row (alias of :meth:`entries`)."""
        return await self.entries()


def system_table(ctx: ReadContext, ns: str, name: str) -> SystemTableHandle:
    """The read-only handle ``ctx.table(name)`` returns for a system table; raises
    :class:`UnknownNameError` for any other unknown name."""
    tdef = SYSTEM_TABLES.get(name)
    if tdef is None:
        raise UnknownNameError(f"unknown table {name!r}")
    if ns != PUBLIC:
        raise PermissionDeniedError(f"system table {name!r} has only public rows")
    return SystemTableHandle(ctx.tx, PUBLIC, name, tdef, False)


def writable_system_table(tx: Tx | AsyncTx, name: str) -> SystemTableHandle:
    """A writable handle on system table ``name`` (the members API's, in the writer's tx)."""
    return SystemTableHandle(tx, PUBLIC, name, SYSTEM_TABLES[name], True)
