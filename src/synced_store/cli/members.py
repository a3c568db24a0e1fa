"""``synced-store members add|remove|list``: the members of an instance (its ``$users`` table).

``add`` and ``remove`` are system mutations of the app (its ``on_add_users`` /
``on_remove_users`` hooks run, and ``on_init`` first if the instance is new), committed by a
registry of this process (``synced_store.server.members``). ``list`` only reads.
"""

from __future__ import annotations

from typing import Any

import click

from ..core.system_tables import USERS
from ..errors import StorageError, SyncedStoreError
from ..storage.base import StorageBackend
from .files import console, echo_json, json_option, require_instance, run_storage, storage_options
from .loading import CliError, load_backend

__all__ = ["members"]


@click.group()
def members() -> None:
    """Add, remove and list the members of an instance ($users).

    Clients read the $users and $user_info tables like any table; with
    define_backend_config(members_only=True) only members may open the instance. `add` and
    `remove` run the app's hooks (on_add_users / on_remove_users) in the same transaction.

    With --database (PostgreSQL) they are safe while servers run, and connected clients see
    the change at once. With --data-dir (SQLite) stop the server first: one process writes an
    instance file (use synced_store.server.members.add_members in a running server).

    \b
    Example:
        synced-store members add examples.chat:backend --data-dir ./data room1 alice bob
        synced-store members add app:backend --database postgresql://db/app room1 carol --role owner
        synced-store members remove examples.chat:backend --data-dir ./data room1 bob
        synced-store members list --data-dir ./data room1
    """


async def _change(
    storage: StorageBackend, app: str, instance_id: str, users: tuple[str, ...], role: str | None
) -> list[str]:
    from ..server.members import add_members, remove_members
    from ..server.registry import InstanceRegistry

    backend = load_backend(app)
    if role is None:
        await require_instance(storage, instance_id)
    else:
        try:
            storage.validate_instance_id(instance_id)
        except SyncedStoreError as exc:
            raise CliError(str(exc)) from None
    try:
        async with InstanceRegistry(backend, storage) as registry:
            if role is None:
                return await remove_members(registry, instance_id, users)
            return await add_members(registry, instance_id, users, role=role)
    except StorageError as exc:
        raise CliError(f"{storage.location(instance_id)}: {exc}") from None
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None


@members.command("add")
@click.argument("app", metavar="MODULE:ATTR")
@click.argument("instance_id")
@click.argument("users", nargs=-1, required=True)
@click.option("--role", default="member", show_default=True, help="The members' role.")
@storage_options
def add(
    storage: StorageBackend, app: str, instance_id: str, users: tuple[str, ...], role: str
) -> None:
    """Make USERS members of INSTANCE_ID (created if missing), with --role.

    \b
    Example:
        synced-store members add examples.chat:backend --data-dir ./data room1 alice --role owner
    """
    added = run_storage(storage, lambda s: _change(s, app, instance_id, users, role))
    click.echo(f"added {len(added)} member(s) to {instance_id}: {', '.join(added) or '-'}")


@members.command("remove")
@click.argument("app", metavar="MODULE:ATTR")
@click.argument("instance_id")
@click.argument("users", nargs=-1, required=True)
@storage_options
def remove(storage: StorageBackend, app: str, instance_id: str, users: tuple[str, ...]) -> None:
    """Remove USERS from the members of INSTANCE_ID (their $user_info stays).

    \b
    Example:
        synced-store members remove examples.chat:backend --data-dir ./data room1 bob
    """
    removed = run_storage(storage, lambda s: _change(s, app, instance_id, users, None))
    click.echo(f"removed {len(removed)} member(s) from {instance_id}: {', '.join(removed) or '-'}")


async def _list(storage: StorageBackend, instance_id: str) -> list[dict[str, Any]]:
    await require_instance(storage, instance_id)
    try:
        reader = await storage.inspect(instance_id)
        try:
            rows = await reader.rows(USERS)
        finally:
            await reader.close()
    except StorageError as exc:
        raise CliError(f"{storage.location(instance_id)}: {exc}") from None
    return [r.value for r in rows if r.ns == "" and isinstance(r.value, dict)]


@members.command("list")
@click.argument("instance_id")
@json_option
@storage_options
def list_(storage: StorageBackend, instance_id: str, as_json: bool) -> None:
    """List the members of INSTANCE_ID (read-only).

    \b
    Example:
        synced-store members list --data-dir ./data room1 --json
    """
    rows = run_storage(storage, lambda s: _list(s, instance_id))
    if as_json:
        echo_json(rows)
        return
    from rich.table import Table

    out = Table(title=f"members of {instance_id}")
    for col in ("user_id", "role", "joined_at", "added_by"):
        out.add_column(col)
    for r in rows:
        out.add_row(*(str(r.get(c, "")) for c in ("user_id", "role", "joined_at", "added_by")))
    console().print(out)
