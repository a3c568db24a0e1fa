"""Cross-instance stores on the server: reads of another instance, and the delivery of
``ctx.mutate_external`` (spec §4.7; the context side is core/external.py).

**Reads.** :class:`ServerExternalAccess` gives a context read-only transactions over the
committed rows of other instances (one read connection each, opened at the first read,
released when the mutation or action ends). An instance that does not exist reads as empty
(nothing is created by a read). The view applies a client's visibility rules for the calling
user (core/external_store.py).

**Who may read or deliver.** The calling user must be allowed to open the other instance as a
connection would be: the server's ``authorize(user_id, instance_id, {})`` (server/auth.py;
claims are empty, a job keeps no token) must not deny it, and on a ``members_only`` backend
the user must already be in its ``$users`` (read-only: nothing joins, nothing is created).
Otherwise the read raises :class:`PermissionDeniedError` and the delivery fails permanently.
A delivery never creates a missing instance on a ``members_only`` backend, nor one
``authorize`` only lets the user open (``Access.OPEN``); where it creates or first opens one,
``on_init`` runs first, in the delivery's transaction (server/members.py). Hooks
(``ctx.is_system``) read without these checks; a delivered mutator runs with
``ctx.is_system`` False.

**Writes: an outbox, delivered exactly once.** Each ``mutate_external`` call of a mutation
becomes a ``$external`` job in the calling instance's outbox (the jobs table: in the instance's
SQLite file, or the shared PostgreSQL database), inserted in the mutation's own transaction,
so it exists exactly when the mutation committed. The action runner claims it like any job and
:func:`deliver` runs the mutator in the target instance through the target's writer, with an
idempotency key (a random id chosen when the job was written) recorded in a server-only row of
the target **in the same transaction** as the mutator's effects. A crash after the caller's
commit leaves the job pending or running, and it is run again after the restart; a crash after
the target's commit but before the job is marked done runs it again too, and the target then
finds the key and skips the mutator. So every external mutation lands once.

**Failures.** A target mutator that fails (unknown mutator, invalid input, an exception) is a
permanent error: the target rolls back, the job ends ``failed`` at once (no retries) with the
error (``synced-store actions list``, the runner's ``on_job_finished``), and it never blocks
other deliveries (jobs are independent). A transient failure (the target unavailable, storage
busy, the server overloaded) is retried with the runner's backoff, up to its ``max_attempts``.

**Retention.** An idempotency key is kept ``RECEIVED_RETENTION`` seconds; each delivery deletes
at most ``PRUNE_PER_DELIVERY`` expired keys of its target.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any, Literal

import pydantic_core

from ..core.context import MutationContext
from ..core.external import EXTERNAL_JOB, EXTERNAL_READ_TIMEOUT, check_instance_id
from ..core.keys import SERVER_ONLY
from ..errors import (
    ActionError,
    OverloadedError,
    PermissionDeniedError,
    StorageError,
    SyncedStoreError,
)
from ..storage.base import CommittedReader
from ..types import EntryKey, RowKey
from .auth import Access, Identity, authorize_instance
from .members import init_in_tx, initialized, is_member, needs_init

if TYPE_CHECKING:
    from .instance import Instance
    from .registry import InstanceRegistry

__all__ = [
    "CRASH_ENV",
    "EXTERNAL_JOB",
    "RECEIVED_RETENTION",
    "RECEIVED_TABLE",
    "PermanentDeliveryError",
    "ServerExternalAccess",
    "deliver",
    "delivered_late",
    "enqueue_from_action",
    "job_call_key",
    "late_result",
    "plug_into",
]

log = logging.getLogger("synced_store.server")

#: The server-only table of a target instance that holds the idempotency keys it received.
RECEIVED_TABLE = "$external_received"
#: Seconds an idempotency key is kept (a redelivery later than this would apply again).
RECEIVED_RETENTION = 7 * 24 * 3600.0
#: Expired keys one delivery deletes at most.
PRUNE_PER_DELIVERY = 32
#: Seconds (at least) the check of a timed-out delivery waits for the target's writer.
LATE_CHECK_TIMEOUT = 60.0
#: Test-only: ``before`` / ``after`` kills this process with SIGKILL just before a delivery
#: (the caller committed, the target not yet) or just after it (the target committed, the
#: job is not yet marked done), so tests reach the windows between the two commits.
CRASH_ENV = "SYNCED_STORE_TEST_KILL_EXTERNAL"


class PermanentDeliveryError(ActionError):
    """An external mutation that failed in its target for good (not retried)."""


class _Empty:
    """The committed rows of an instance that does not exist: none."""

    async def read(self, key: RowKey) -> tuple[str, Any] | None:
        return None

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
        return []

    async def close(self) -> None:
        return None


class _ExternalTx:
    """Core ``AsyncTx`` over another instance's committed rows, opened at the first read."""

    copy_on_read = False
    is_async: Literal[True] = True

    def __init__(
        self, access: ServerExternalAccess, instance_id: str, user_id: str, trusted: bool
    ) -> None:
        self._access = access
        self._instance_id = instance_id
        self._user_id = user_id
        self._trusted = trusted
        self._reader: CommittedReader | _Empty | None = None

    async def _open(self) -> CommittedReader | _Empty:
        if self._reader is None:
            self._reader = await self._access._open(self._instance_id, self._user_id, self._trusted)
        return self._reader

    async def read(self, key: RowKey) -> tuple[str, Any] | None:
        async with asyncio.timeout(EXTERNAL_READ_TIMEOUT):
            return await (await self._open()).read(key)

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
        async with asyncio.timeout(EXTERNAL_READ_TIMEOUT):
            reader = await self._open()
            return await reader.scan(
                ns, table, start, exclusive=exclusive, reverse=reverse, limit=limit
            )

    async def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        raise PermissionDeniedError("external stores are read-only; use ctx.mutate_external")

    async def remove(self, key: RowKey) -> None:
        raise PermissionDeniedError("external stores are read-only; use ctx.mutate_external")


class ServerExternalAccess:
    """``ExternalAccess`` of one mutation or action: read connections to other instances,
    each held open (the instance is not closed meanwhile) until :meth:`close`."""

    def __init__(self, registry: InstanceRegistry) -> None:
        self.registry = registry
        self._open_readers: list[tuple[Instance | None, CommittedReader | _Empty]] = []

    def reader(self, instance_id: str, user_id: str, *, trusted: bool = False) -> _ExternalTx:
        """A read-only transaction over ``instance_id``'s committed rows for ``user_id``
        (checked at the first read unless ``trusted``: see the module docstring)."""
        return _ExternalTx(self, check_instance_id(instance_id), user_id, trusted)

    async def _open(
        self, instance_id: str, user_id: str, trusted: bool
    ) -> CommittedReader | _Empty:
        registry = self.registry
        if not trusted and await _authorize(registry, user_id, instance_id) is Access.DENY:
            raise PermissionDeniedError(f"{user_id} is not authorized to open {instance_id}")
        if not await registry.exists(instance_id):
            return _Empty()
        inst = await registry.get(instance_id)
        inst.holds += 1
        reader = inst.store.reader()
        self._open_readers.append((inst, reader))  # released by close(), also on a refusal
        if not trusted and inst.config.members_only and not await is_member(reader, user_id):
            raise PermissionDeniedError(f"{user_id} is not a member of {instance_id}")
        return reader

    async def close(self) -> None:
        """Release every read connection opened (never raises: a failing close is logged)."""
        readers, self._open_readers = self._open_readers, []
        for inst, reader in readers:
            try:
                await reader.close()
            except Exception as exc:
                log.warning("closing a read connection to another instance failed: %s", exc)
            finally:
                if inst is not None:
                    inst.holds -= 1
                    inst.last_used = asyncio.get_running_loop().time()


async def _authorize(registry: InstanceRegistry, user_id: str, instance_id: str) -> Access:
    """What the server's ``authorize`` lets ``user_id`` do with ``instance_id`` (no claims:
    external reads and deliveries carry no token)."""
    return await authorize_instance(registry.authorize, Identity(user_id), instance_id)


def plug_into(registry: InstanceRegistry, inst: Instance) -> None:
    """Give ``inst``'s mutators external stores (``registry.on_open`` calls this)."""
    inst._mutations.external = lambda: ServerExternalAccess(registry)


async def enqueue_from_action(inst: Instance, user_id: str, calls: list[dict[str, Any]]) -> None:
    """Write an action's ``mutate_external`` calls into ``inst``'s outbox (committed on
    return) and wake the runner."""
    now = time.time()

    async def add(tx: Any) -> None:
        # The same quotas as jobs a mutation enqueues (QuotaExceededError, nothing written).
        await inst._mutations._check_job_quota(tx, user_id, len(calls))
        for call in calls:
            await tx.add_job(EXTERNAL_JOB, call, user_id, now)

    await inst.in_writer(add)
    if inst.on_jobs_enqueued is not None:
        inst.on_jobs_enqueued()


def job_call_key(instance_id: str, job_id: int, calls: list[dict[str, Any]]) -> str:
    """The idempotency key of the last of ``calls`` made by job ``job_id`` of ``instance_id``:
    the same for the same call at the same position in every attempt of that job."""
    call = calls[-1]
    what = [instance_id, job_id, len(calls), call["instance"], call["mutator"], call["input"]]
    return "job-" + hashlib.sha256(pydantic_core.to_json(what)).hexdigest()[:32]


def _crash_point(where: str) -> None:
    if os.environ.get(CRASH_ENV) == where:
        os.kill(os.getpid(), signal.SIGKILL)


async def deliver(
    registry: InstanceRegistry, source: Instance, job: Any, user_id: str
) -> dict[str, Any]:
    """Run one ``$external`` job: its mutator in its target instance, exactly once.

    Returns ``{"instance", "mutator", "duplicate"}`` (``duplicate``: the target had already
    applied it). Raises :class:`PermanentDeliveryError` when the mutator fails there or the
    user may not open the target (module docstring), and the storage error (retried by the
    runner) when the target cannot be written now.
    """
    try:
        target_id = check_instance_id(job["instance"])
        name = job["mutator"]
        args = job["input"]
        key = job["key"]
        if not isinstance(name, str) or not isinstance(key, str) or not key:
            raise TypeError("mutator and key must be strings")
    except (KeyError, TypeError, SyncedStoreError) as exc:
        raise PermanentDeliveryError(f"invalid external mutation in the outbox: {exc}") from None
    config = registry.config
    mutator = config.mutators.get(name)
    if mutator is None:
        raise PermanentDeliveryError(f"unknown mutator {name!r} for instance {target_id}")
    mdef = config.schema.mutator(name)
    access = await _authorize(registry, user_id, target_id)
    if access is Access.DENY:
        raise PermanentDeliveryError(f"{user_id} is not authorized to open instance {target_id}")
    if (access is Access.OPEN or config.members_only) and not await registry.exists(target_id):
        raise PermanentDeliveryError(
            f"instance {target_id} does not exist (a delivery from {user_id} may not create it)"
        )
    source_info = {
        "type": "external-store",
        "user_id": user_id,
        "store": {"instance_id": source.instance_id},
    }
    duplicate = False
    init = False

    async def apply(ctx: MutationContext) -> None:
        nonlocal duplicate
        tx: Any = ctx.tx
        rk = RowKey(SERVER_ONLY, RECEIVED_TABLE, key)
        if await tx.read(rk) is not None:
            duplicate = True
            return
        if init:  # on_init first (is_system True), as when a connection opens it
            new = target.store.version == 0 and not config.members_only
            await init_in_tx(ctx, config, user_id if new else None)
        if config.members_only and not await is_member(tx, user_id):
            raise PermissionDeniedError(f"{user_id} is not a member of {target_id}")
        ctx.is_system = False  # an app mutator, run as the user (not a hook)
        ctx.source = source_info
        await mutator(ctx, mdef.parse_input(args))
        now = time.time()
        record = {"from": source.instance_id, "mutator": name, "at": now}
        await tx.write(rk, _sort_key(now), record, pydantic_core.to_json(record))
        await _prune(tx, now)

    _crash_point("before")
    try:
        async with registry.hold(target_id) as target:
            init = needs_init(target) and target not in initialized
            await target.mutate(user_id, name, args, source_info, system=apply)
            if init and not duplicate:  # the marker is committed now
                initialized.add(target)
    except (StorageError, OverloadedError):
        raise  # transient: the runner retries with backoff
    except Exception as exc:
        raise PermanentDeliveryError(
            f"external mutation {name!r} failed in instance {target_id}: {exc}"
        ) from exc
    _crash_point("after")
    return {"instance": target_id, "mutator": name, "duplicate": duplicate}


async def delivered_late(registry: InstanceRegistry, job: Any, timeout: float) -> bool:
    """After a delivery's wait timed out: whether its target recorded the job's key anyway.

    The read runs in the target's writer, so it comes after a delivery still queued there
    (committed or rolled back by then); False when it cannot tell within ``timeout`` (at
    least ``LATE_CHECK_TIMEOUT``): the job then counts the attempt as failed, as before.
    """
    try:
        target_id = check_instance_id(job["instance"])
        rk = RowKey(SERVER_ONLY, RECEIVED_TABLE, job["key"])
        async with asyncio.timeout(max(timeout, LATE_CHECK_TIMEOUT)):
            if not await registry.exists(target_id):
                return False
            async with registry.hold(target_id) as target:
                return await target.in_writer(lambda tx: tx.read(rk)) is not None
    except Exception as exc:  # a bad job, the target unavailable, the timeout: not known
        log.info("could not check a timed-out delivery: %r", exc)
        return False


def late_result(job: Any) -> dict[str, Any]:
    """The output of a delivery found committed after its wait timed out."""
    return {"instance": job["instance"], "mutator": job["mutator"], "duplicate": False}


def _sort_key(at: float) -> str:
    return f"{at:020.6f}"


async def _prune(tx: Any, now: float) -> None:
    """Delete up to ``PRUNE_PER_DELIVERY`` idempotency keys older than the retention."""
    rows = await tx.scan(
        SERVER_ONLY, RECEIVED_TABLE, None, exclusive=False, reverse=False, limit=PRUNE_PER_DELIVERY
    )
    cutoff = _sort_key(now - RECEIVED_RETENTION)
    for ek, _ in rows:
        if ek.sort_key >= cutoff:
            break
        await tx.remove(RowKey(SERVER_ONLY, RECEIVED_TABLE, ek.item_key))
