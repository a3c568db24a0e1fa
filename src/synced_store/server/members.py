"""Members of an instance, its system tables, and the system hooks.

Every instance has two system tables its clients read like any table: ``$users`` (its
members: user id, role, when they joined, who added them) and ``$user_info`` (display name and
avatar URL per user, kept after a user leaves). Nothing writes them but this module, always in
the instance's writer transaction, as a *system* item: the hooks of
``define_backend_config(hooks=...)`` run in that same transaction with ``ctx.is_system`` True
and ``ctx.source == {"type": "system", "event": ...}``:

* ``on_init(ctx)``: once per instance. The first time an instance is opened by a server whose
  backend has hooks or a membership option, a server-only marker row is written in the same
  transaction as ``on_init``'s writes, so it runs exactly once (a crash before the commit
  leaves no marker and no writes; other processes on shared storage see the marker).
* ``on_add_users(ctx, user_ids)`` / ``on_remove_users(ctx, user_ids)``: after those users'
  ``$users`` rows were written / deleted, only for users whose membership changed.

The API: :func:`add_members`, :func:`remove_members`, :func:`list_members`,
:func:`set_user_info` take the registry (``app.state.registry``) and an instance id;
:class:`InstanceMembers` does the same on an open :class:`Instance` (an action's
``ctx.instance``). ``synced-store members add|remove|list`` calls them (cli/members.py).

Membership at connect (:func:`admit`, called by the endpoint after ``authorize``): with
``members_only`` a user who is not in ``$users`` is refused (close code 4001) before its client
is registered or any row is sent; the user whose connection creates the instance becomes its
first member (role ``"owner"``). With ``auto_join`` every user ``authorize`` lets in becomes a
member (role ``"member"``) when it connects.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from ..core.context import AsyncTx
from ..core.keys import PUBLIC, SERVER_ONLY, encode_value, private_ns
from ..core.system_tables import USER_INFO, USERS, writable_system_table
from ..errors import InstanceUnavailableError, PermissionDeniedError, ValidationError
from ..types import RowKey
from .auth import Access, Identity
from .batch import Direct

if TYPE_CHECKING:
    from ..core.context import MutationContext
    from ..schema import BackendConfig
    from .instance import Instance
    from .registry import InstanceRegistry

__all__ = [
    "InstanceMembers",
    "add_members",
    "admit",
    "init_in_tx",
    "initialized",
    "is_member",
    "list_members",
    "needs_init",
    "remove_members",
    "set_user_info",
]

#: The server-only row that records that ``on_init`` ran (and who created the instance).
INIT_KEY = RowKey(SERVER_ONLY, "$system", "init")
#: The user id system items run as when no user caused them.
SYSTEM_USER = "$system"
#: Most users one call may add or remove.
MAX_USERS_PER_CALL = 1000
#: Instances (objects) this process knows are initialized: their marker is committed.
initialized: weakref.WeakSet[Instance] = weakref.WeakSet()


def needs_init(instance: Instance) -> bool:
    config = instance.config
    return bool(config.hooks or config.members_only or config.auto_join)


def _check_user_ids(user_ids: Iterable[str]) -> list[str]:
    if isinstance(user_ids, str):
        raise ValidationError("user_ids must be a list of user ids, not one string")
    out = list(dict.fromkeys(user_ids))
    if len(out) > MAX_USERS_PER_CALL:
        raise ValidationError(f"at most {MAX_USERS_PER_CALL} users per call")
    for uid in out:
        try:
            private_ns(uid)  # the rule for user ids: 1-128 characters, no '/'
        except PermissionDeniedError:
            raise ValidationError(f"invalid user id {uid!r}") from None
    return out


def _check_role(role: str) -> str:
    if not isinstance(role, str) or not 1 <= len(role) <= 64:
        raise ValidationError("role must be a string of 1-64 characters")
    return role


async def init_in_tx(ctx: MutationContext, config: BackendConfig, creator: str | None) -> None:
    """Run ``on_init`` (and add the creator of a members-only instance) unless the marker says
    it already ran."""
    tx = cast(AsyncTx, ctx.tx)
    if await tx.read(INIT_KEY) is not None:
        return
    value = {"created_at": time.time(), "created_by": creator}
    await tx.write(INIT_KEY, "", value, encode_value(INIT_KEY, value))
    hook = config.hooks.get("on_init")
    if hook is not None:
        user, ctx.user_id = ctx.user_id, creator or SYSTEM_USER
        ctx.source = {"type": "system", "event": "init", "created_by": creator}
        await hook(ctx)
        ctx.user_id = user
    if creator is not None and config.members_only:
        ctx.source = {"type": "system", "event": "add_users", "user_ids": [creator]}
        await _add_in_tx(ctx, config, [creator], "owner", "creator", None)


async def _add_in_tx(
    ctx: MutationContext,
    config: BackendConfig,
    user_ids: list[str],
    role: str,
    added_by: str,
    names: dict[str, str] | None,
) -> list[str]:
    """Write the ``$users`` rows (and default ``$user_info`` rows); run ``on_add_users`` for
    the users who were not members. Returns those users."""
    users = writable_system_table(ctx.tx, USERS)
    info = writable_system_table(ctx.tx, USER_INFO)
    added: list[str] = []
    now = time.time()
    for uid in user_ids:
        row = await users.get(uid)
        if isinstance(row, dict) and row.get("role") == role:
            continue
        joined = row.get("joined_at", now) if isinstance(row, dict) else now
        by = row.get("added_by", added_by) if isinstance(row, dict) else added_by
        await users.set(uid, {"user_id": uid, "role": role, "joined_at": joined, "added_by": by})
        if row is None:
            added.append(uid)
        if await info.get(uid) is None:
            name = (names or {}).get(uid) or uid
            await info.set(uid, {"user_id": uid, "display_name": name[:200], "avatar_url": ""})
    hook = config.hooks.get("on_add_users")
    if added and hook is not None:
        await hook(ctx, list(added))
    return added


async def _remove_in_tx(
    ctx: MutationContext, config: BackendConfig, user_ids: list[str]
) -> list[str]:
    users = writable_system_table(ctx.tx, USERS)
    removed: list[str] = []
    for uid in user_ids:
        if await users.get(uid) is not None:
            await users.delete(uid)
            removed.append(uid)
    hook = config.hooks.get("on_remove_users")
    if removed and hook is not None:
        await hook(ctx, list(removed))
    return removed


async def _run(
    instance: Instance, event: str, body: Any, *, user_id: str = SYSTEM_USER, **source: Any
) -> Any:
    """Run ``body(ctx)`` as one system item in the instance's writer (after ``on_init``, in
    the same transaction, if this process has not seen the instance initialized)."""
    out: dict[str, Any] = {}
    creator = source.pop("creator", None)
    init = needs_init(instance) and instance not in initialized

    async def system(ctx: MutationContext) -> None:
        if init:
            await init_in_tx(ctx, instance.config, creator)
        ctx.source = {"type": "system", "event": event, **source}
        out["result"] = await body(ctx)

    item = Direct(
        user_id, f"$system.{event}", None, {"type": "system", "event": event}, system=system
    )
    await instance.run_system(item)
    if init:
        initialized.add(instance)
    return out.get("result")


class _Reads(Protocol):
    async def read(self, key: RowKey) -> tuple[str, Any] | None: ...


async def is_member(rows: _Reads, user_id: str) -> bool:
    """Whether ``user_id`` has a ``$users`` row in ``rows`` (a writer's transaction, or a
    committed reader: what a ``members_only`` check reads)."""
    return await rows.read(RowKey(PUBLIC, USERS, user_id)) is not None


async def admit(instance: Instance, identity: Identity, access: Access) -> bool:
    """Whether ``identity`` may open ``instance`` under its backend's membership options
    (always True without them); initializes the instance first (``on_init``). With
    ``members_only`` a user allowed to create the instance (``access``) becomes its owner
    when its connection creates it; with ``auto_join`` the user becomes a member."""
    config = instance.config
    if not needs_init(instance):
        return True
    user_id = identity.user_id
    if instance in initialized and not config.auto_join:
        if not config.members_only:
            return True
        member: bool = await instance.in_writer(lambda tx: is_member(tx, user_id))
        return member
    name = identity.claims.get("name") if isinstance(identity.claims, Mapping) else None
    names = {user_id: name} if isinstance(name, str) and name else None

    async def body(ctx: MutationContext) -> bool:
        users = writable_system_table(ctx.tx, USERS)
        if await users.get(user_id) is not None:
            return True
        if config.auto_join and not config.members_only:
            await _add_in_tx(ctx, config, [user_id], "member", "auto_join", names)
            return True
        return not config.members_only

    # The creator: allowed to create it, and it holds nothing yet (not an instance that
    # existed before the backend had hooks or membership options).
    new = access is Access.CREATE and instance.store.version == 0
    creator = user_id if new else None
    result: bool = await _run(instance, "admit", body, user_id=user_id, creator=creator)
    return result


class InstanceMembers:
    """The members API on an open instance (an action's ``ctx.instance``)."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    async def add(
        self, user_ids: Iterable[str], *, role: str = "member", added_by: str = "system"
    ) -> list[str]:
        """Make ``user_ids`` members with ``role`` (a member's role is updated); runs
        ``on_add_users`` with the users who were not members. Returns those users."""
        ids = _check_user_ids(user_ids)
        _check_role(role)

        async def body(ctx: MutationContext) -> list[str]:
            return await _add_in_tx(ctx, self.instance.config, ids, role, added_by, None)

        added: list[str] = await _run(self.instance, "add_users", body, user_ids=ids)
        return added

    async def remove(self, user_ids: Iterable[str]) -> list[str]:
        """Remove ``user_ids`` from ``$users`` (their ``$user_info`` stays); runs
        ``on_remove_users`` with the users who were members. Returns those users."""
        ids = _check_user_ids(user_ids)

        async def body(ctx: MutationContext) -> list[str]:
            return await _remove_in_tx(ctx, self.instance.config, ids)

        removed: list[str] = await _run(self.instance, "remove_users", body, user_ids=ids)
        return removed

    async def set_user_info(
        self, user_id: str, *, display_name: str | None = None, avatar_url: str | None = None
    ) -> None:
        """Set a user's ``$user_info`` fields (those given; the others are kept)."""
        (uid,) = _check_user_ids([user_id])

        async def body(ctx: MutationContext) -> None:
            info = writable_system_table(ctx.tx, USER_INFO)
            row = await info.get(uid)
            value = dict(row) if isinstance(row, dict) else {"user_id": uid, "display_name": uid}
            if display_name is not None:
                value["display_name"] = display_name
            if avatar_url is not None:
                value["avatar_url"] = avatar_url
            await info.set(uid, value)  # validated: ValidationError for a too long name

        await _run(self.instance, "set_user_info", body, user_ids=[uid])

    async def list(self) -> list[dict[str, Any]]:
        """The rows of ``$users`` (committed), by user id."""

        async def body(ctx: MutationContext) -> list[dict[str, Any]]:
            users = writable_system_table(ctx.tx, USERS)
            return [v for v in await users.values() if isinstance(v, dict)]

        rows: list[dict[str, Any]] = await _run(self.instance, "list_users", body)
        return rows


@contextlib.asynccontextmanager
async def _held(
    registry: InstanceRegistry, instance_id: str, *, create: bool
) -> AsyncIterator[InstanceMembers]:
    if not create and not await registry.exists(instance_id):
        raise InstanceUnavailableError(f"no instance {instance_id!r}")
    async with registry.hold(instance_id) as inst:
        yield InstanceMembers(inst)


async def add_members(
    registry: InstanceRegistry,
    instance_id: str,
    user_ids: Iterable[str],
    *,
    role: str = "member",
) -> list[str]:
    """Make ``user_ids`` members of ``instance_id`` (created if missing); returns the users
    who were not members. Their clients see the ``$users`` rows at once."""
    async with _held(registry, instance_id, create=True) as members:
        return await members.add(user_ids, role=role)


async def remove_members(
    registry: InstanceRegistry, instance_id: str, user_ids: Iterable[str]
) -> list[str]:
    """Remove ``user_ids`` from ``instance_id``'s members; returns the users who were members.

    Connected clients of a removed user stay connected (they see their ``$users`` row go);
    membership is checked when a connection opens."""
    async with _held(registry, instance_id, create=False) as members:
        return await members.remove(user_ids)


async def list_members(registry: InstanceRegistry, instance_id: str) -> list[dict[str, Any]]:
    """The ``$users`` rows of ``instance_id``."""
    async with _held(registry, instance_id, create=False) as members:
        return await members.list()


async def set_user_info(
    registry: InstanceRegistry,
    instance_id: str,
    user_id: str,
    *,
    display_name: str | None = None,
    avatar_url: str | None = None,
) -> None:
    """Set ``user_id``'s display name and/or avatar URL in ``instance_id``'s ``$user_info``."""
    async with _held(registry, instance_id, create=False) as members:
        await members.set_user_info(user_id, display_name=display_name, avatar_url=avatar_url)
