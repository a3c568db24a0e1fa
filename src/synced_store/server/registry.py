"""Open instances: opening on first use, closing when idle, failing alone, reopening with backoff.

The registry owns every instance's writer task, supervised one by one (no task group that one
failure would end): an instance whose storage fails is dropped from :attr:`instances` and
recorded in :attr:`failed` with a backoff, during which connections to it are refused with
1011; after it, the next connection (or the supervisor, for an instance with jobs) opens it
again. Other instances never notice.

Open state is bounded: at most ``max_open_instances`` (the least recently used idle one is
closed to make room; with none idle the new one is refused with 1013), and an instance with
no session and no running job closes after ``idle_instance_timeout``. The file-descriptor
budget is checked at start-up (:func:`fd_budget`). The supervisor loop (once a second) also
aborts connections whose send timed out and runs retention (compaction) on open instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InstanceUnavailableError, OverloadedError, StorageError
from ..schema import BackendConfig, Schema
from ..storage.base import StorageBackend, WriterTx
from ..storage.records import Compaction, DatabaseSchemaError
from ..storage.sqlite_backend import SqliteBackend
from .auth import Authorizer, open_authorize
from .instance import Instance
from .limits import Retention, ServerLimits
from .search import search_config

__all__ = ["FdBudget", "InstanceRegistry", "fd_budget"]

log = logging.getLogger("synced_store.server")

#: File descriptors of one open instance (the writer's database, WAL and shared-memory files).
FDS_PER_INSTANCE = 3
#: Of one connection: its socket, and a catch-up's read connection (database and WAL).
FDS_PER_CONNECTION = 3
#: Of one running action (its read connection).
FDS_PER_ACTION = 2
#: For everything else: the listening socket, stdio, the event loop, logs, the CLI's reads.
FDS_RESERVED = 64
#: Reopening a failed instance waits 1 s, doubling to at most this long.
REOPEN_BACKOFF_MAX = 60.0
#: An instance that stayed open this long before failing starts its backoff from 1 s again.
STABLE_AFTER = 60.0
SUPERVISOR_INTERVAL = 1.0
#: Instances with waiting jobs opened per supervisor round (the rest wait for the next).
WAKEUPS_PER_ROUND = 16
#: Failed instances remembered (for their backoff and /healthz); the oldest are forgotten.
MAX_FAILED = 1_000


@dataclass
class Failure:
    """A failed instance: why, how many times in a row, and when it may reopen (loop time)."""

    error: str
    attempts: int
    retry_at: float


@dataclass(frozen=True)
class FdBudget:
    """What the process can open within its file-descriptor limit."""

    limit: int
    max_open_instances: int
    max_connections: int


def fd_budget(limits: ServerLimits, action_concurrency: int) -> FdBudget:
    """Check ``RLIMIT_NOFILE`` against the limits, raising the soft limit up to the hard one
    if that helps. If even that is too small, both caps are scaled down to fit (and a warning
    says so), so the server refuses connections and instances it cannot serve instead of
    running out of descriptors (``accept`` failing with EMFILE wedges every client)."""
    want = (
        FDS_RESERVED
        + action_concurrency * FDS_PER_ACTION
        + limits.max_open_instances * FDS_PER_INSTANCE
        + limits.max_connections * FDS_PER_CONNECTION
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= want:
        return FdBudget(int(want), limits.max_open_instances, limits.max_connections)
    spare = soft - FDS_RESERVED - action_concurrency * FDS_PER_ACTION
    scale = max(0.0, spare) / (want - FDS_RESERVED - action_concurrency * FDS_PER_ACTION)
    budget = FdBudget(
        int(soft),
        max(1, int(limits.max_open_instances * scale)),
        max(1, int(limits.max_connections * scale)),
    )
    log.warning(
        "file descriptor limit %d is below the %d the limits need; serving at most %d open "
        "instances and %d connections (raise `ulimit -n` to lift this)",
        soft,
        want,
        budget.max_open_instances,
        budget.max_connections,
    )
    return budget


class InstanceRegistry:
    """Creates instances on first use. Use as ``async with registry:`` (owns the writers, and
    the storage backend: it is started on enter and closed on exit).

    ``storage`` is a :class:`~synced_store.storage.base.StorageBackend`, or a data dir for the
    embedded SQLite backend (with ``durability``).
    """

    def __init__(
        self,
        config: BackendConfig,
        storage: StorageBackend | str | Path,
        *,
        durability: str = "normal",
        limits: ServerLimits | None = None,
        retention: Retention | None = None,
        append_deltas: bool = True,
    ) -> None:
        self.config = config
        #: Send growing strings as append deltas (False: always whole rows).
        self.append_deltas = append_deltas
        if isinstance(storage, str | Path):
            storage = SqliteBackend(storage, durability=durability)
        self.storage: StorageBackend = storage
        self.limits = limits or ServerLimits()
        self.retention = retention or Retention()
        #: Open instances, least recently used first.
        self.instances: OrderedDict[str, Instance] = OrderedDict()
        #: Instances whose storage failed, waiting out their backoff.
        self.failed: dict[str, Failure] = {}
        self.max_open_instances = self.limits.max_open_instances
        self.max_connections = self.limits.max_connections
        self.running = False
        #: Called with each newly opened instance (the action runner hooks in here).
        self.on_open: list[Callable[[Instance], None]] = []
        #: Instances to open at a loop time (they hold jobs that are due then).
        self._wakeups: dict[str, float] = {}
        self._opening: dict[str, asyncio.Future[Instance]] = {}
        self._closing: dict[str, asyncio.Future[None]] = {}
        self._writers: dict[Instance, asyncio.Task[object]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._compacted: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        self._supervisor: asyncio.Task[object] | None = None
        self.action_concurrency = 32
        #: Who may open which instance (``create_app(authorize=...)``); also checked for
        #: external stores and deliveries (server/external.py).
        self.authorize: Authorizer = open_authorize

    # -- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> InstanceRegistry:
        budget = fd_budget(self.limits, self.action_concurrency)
        self.max_open_instances = budget.max_open_instances
        self.max_connections = budget.max_connections
        try:
            await self.storage.start()
        except DatabaseSchemaError as exc:
            log.error("refusing to serve %s: %s", self.storage.description, exc)
            await self.storage.close()
            raise  # a database of another layout: refuse to serve it at all
        except StorageError as exc:  # /healthz reports it; instances fail to open meanwhile
            log.error("cannot start storage (%s): %s", self.storage.description, exc)
        self.running = True
        self._supervisor = self.spawn(self._supervise(), "registry-supervisor")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.running = False
        if self._supervisor is not None:
            self._supervisor.cancel()
        for inst in list(self.instances.values()):
            inst.stop()
        await asyncio.gather(*self._writers.values(), return_exceptions=True)
        for inst in list(self.instances.values()):
            await self._close_store(inst)
        self.instances.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.storage.close()
        except Exception as exc:
            log.warning("closing storage (%s) failed: %s", self.storage.description, exc)

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[object]:
        """Run a background coroutine owned by the registry (failures are logged, never
        propagated: one failing task does not stop the others)."""
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    # -- lookup ----------------------------------------------------------------------------

    async def exists(self, instance_id: str) -> bool:
        """True if the instance is open or stored (``instance_id`` is valid)."""
        return instance_id in self.instances or await self.storage.exists(instance_id)

    async def get(self, instance_id: str) -> Instance:
        """The instance ``instance_id`` (validated), opening its database on first use.

        Raises :class:`InstanceUnavailableError` while a failed instance waits out its
        backoff (or if opening fails now) and :class:`OverloadedError` when
        ``max_open_instances`` are open and none of them is idle.
        """
        inst = self.instances.get(instance_id)
        if inst is not None:
            self.instances.move_to_end(instance_id)
            return inst
        if not self.running:
            raise InstanceUnavailableError("the server is not running")
        failure = self.failed.get(instance_id)
        loop = asyncio.get_running_loop()
        if failure is not None and loop.time() < failure.retry_at:
            raise InstanceUnavailableError(
                f"instance {instance_id} is unavailable ({failure.error}); retry in "
                f"{failure.retry_at - loop.time():.0f}s"
            )
        opening = self._opening.get(instance_id)
        if opening is not None:
            return await asyncio.shield(opening)
        closing = self._closing.get(instance_id)
        if closing is not None:  # never two writers on one file: wait for the old one
            await asyncio.shield(closing)
            return await self.get(instance_id)
        await self._make_room()
        if instance_id in self.instances or instance_id in self._opening:
            return await self.get(instance_id)  # opened by someone else while we made room
        fut: asyncio.Future[Instance] = loop.create_future()
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._opening[instance_id] = fut
        existed = True  # unless the backend says otherwise (a failure then counts as one)
        try:
            existed = await self.storage.exists(instance_id)
            inst = await self._open(instance_id)
        except BaseException as exc:
            if isinstance(exc, StorageError) and not exc.transient:
                self._record_failure(instance_id, exc, stable=False, existed=existed)
            fut.set_exception(exc)
            raise
        else:
            fut.set_result(inst)
        finally:
            del self._opening[instance_id]
        return inst

    def _open_count(self) -> int:
        """Instances holding a database open: open, opening or closing."""
        return len(self.instances) + len(self._opening) + len(self._closing)

    @contextlib.asynccontextmanager
    async def hold(self, instance_id: str) -> AsyncIterator[Instance]:
        """The instance, kept open (never closed as idle or to make room) while held: a
        connection holds it from its handshake to its end."""
        inst = await self.get(instance_id)
        inst.holds += 1
        try:
            yield inst
        finally:
            inst.holds -= 1
            inst.last_used = asyncio.get_running_loop().time()

    async def _make_room(self) -> None:
        """Close least recently used unused instances until one more may open."""
        while self._open_count() >= self.max_open_instances:
            now = asyncio.get_running_loop().time()
            idle = next((i for i in self.instances.values() if i.evictable()), None)
            if idle is None and self._closing:  # one is closing already: wait for it
                await asyncio.shield(next(iter(self._closing.values())))
                continue
            if idle is None:
                raise OverloadedError(
                    f"{len(self.instances)} instances are open (the limit), all in use; "
                    "try again later"
                )
            log.info("closing instance %s to make room (limit reached)", idle.instance_id)
            await self.close_instance(idle, now=now)

    async def _open(self, instance_id: str) -> Instance:
        store = await self.storage.open_instance(instance_id)
        if store.schema_version is None:
            store.schema_version = self.config.schema.schema_version if store.version else None
        inst = Instance(
            instance_id,
            store,
            self.config,
            limits=self.limits,
            retention=self.retention,
            append_deltas=self.append_deltas,
        )
        writer = self._writers[inst] = self.spawn(inst.run(), f"writer:{instance_id}")
        writer.add_done_callback(functools.partial(self._writer_done, inst))
        try:
            if store.schema_version is None:  # new: its version and index in one commit
                await inst.in_writer(functools.partial(_set_up, self.config.schema))
            else:
                await inst.migrate_schema()
                more = await inst.in_writer(
                    functools.partial(_configure_search, self.config.schema)
                )
                if more:  # rows queued by a migration, or before a crash: indexed soon
                    inst.search_index.queued(store.version)
        except BaseException:
            inst.stop()
            await asyncio.gather(writer, return_exceptions=True)
            await self._close_store(inst)
            raise
        if inst.state != "open":  # failed while migrating (its batch failed): nothing opened
            await asyncio.gather(writer, return_exceptions=True)
            await self._close_store(inst)
            raise inst.error or InstanceUnavailableError(f"instance {instance_id} failed")
        # Failures from now on go through _on_failed (a failure while opening is get()'s).
        inst.on_failed = self._on_failed
        self.instances[instance_id] = inst
        self._wakeups.pop(instance_id, None)
        self.failed.pop(instance_id, None)
        for cb in self.on_open:
            cb(inst)
        log.info("opened instance %s at %s", instance_id, self.storage.location(instance_id))
        return inst

    # -- closing and failing ---------------------------------------------------------------

    async def close_instance(self, inst: Instance, *, now: float | None = None) -> None:
        """Close an open instance (idle, or to make room): its writer finishes what is queued.
        An instance whose database holds pending jobs is opened again when the next is due.
        Until its store is closed, ``get`` of the same id waits (one writer per file)."""
        iid = inst.instance_id
        if self.instances.get(iid) is not inst:
            return
        del self.instances[iid]
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        self._closing[iid] = closed
        due: float | None = None
        try:
            try:
                due = await inst.store.next_due()
            except Exception as exc:  # a failing database still gets closed
                log.warning("instance %s: reading its jobs failed: %s", iid, exc)
            inst.stop()
            await self._writer_stopped(inst)
        finally:
            await self._close_store(inst)
            del self._closing[iid]
            closed.set_result(None)
        self._compacted.pop(iid, None)
        self._attempts.pop(iid, None)
        if due is not None:
            self._wakeups[iid] = loop.time() + max(0.0, due - time.time())
        log.info("closed instance %s", iid)

    async def _writer_stopped(self, inst: Instance) -> None:
        writer = self._writers.get(inst)
        if writer is not None:
            await asyncio.gather(writer, return_exceptions=True)

    async def _close_store(self, inst: Instance) -> None:
        try:
            await inst.close()
        except Exception as exc:  # a failed database may not even close cleanly
            log.warning("instance %s: closing its database failed: %s", inst.instance_id, exc)

    def _writer_done(self, inst: Instance, task: asyncio.Task[object]) -> None:
        self._writers.pop(inst, None)
        if task.cancelled() or task.exception() is None:
            return
        inst.fail(task.exception() or RuntimeError("writer stopped"))

    def _on_failed(self, inst: Instance, exc: BaseException) -> None:
        if self.instances.get(inst.instance_id) is inst:
            del self.instances[inst.instance_id]
        now = asyncio.get_running_loop().time()
        self._record_failure(inst.instance_id, exc, stable=now - inst.opened_at >= STABLE_AFTER)

        async def finish() -> None:
            await self._writer_stopped(inst)
            await self._close_store(inst)

        self.spawn(finish(), f"close-failed:{inst.instance_id}")

    def _record_failure(
        self, instance_id: str, exc: BaseException, *, stable: bool, existed: bool = True
    ) -> None:
        now = asyncio.get_running_loop().time()
        attempts = 1 if stable else self._attempts.get(instance_id, 0) + 1
        self._attempts[instance_id] = attempts
        delay = min(REOPEN_BACKOFF_MAX, 2.0 ** (attempts - 1))
        self.failed.pop(instance_id, None)
        self.failed[instance_id] = Failure(str(exc), attempts, now + delay)
        while len(self.failed) > MAX_FAILED:  # the oldest failures are forgotten
            old = next(iter(self.failed))
            del self.failed[old]
            self._attempts.pop(old, None)
            self._wakeups.pop(old, None)
        # An existing instance is reopened by the next connection or by the supervisor (jobs
        # may be waiting); one that never existed only when someone asks for it again.
        if existed:
            self._wakeups[instance_id] = now + delay

    def schedule_open(self, instance_id: str, at: float = 0.0) -> None:
        """Open ``instance_id`` (for its jobs) once the loop time is ``at`` and there is room."""
        self._wakeups[instance_id] = min(at, self._wakeups.get(instance_id, at))

    # -- the supervisor --------------------------------------------------------------------

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SUPERVISOR_INTERVAL)
            now = loop.time()
            try:
                await self._supervise_once(now)
            except Exception:  # never let one bad round stop supervision
                log.exception("instance supervisor round failed")

    async def _supervise_once(self, now: float) -> None:
        for inst in list(self.instances.values()):
            for session in list(inst.sessions.values()):
                session.check_send_timeout(now)
        for inst in list(self.instances.values()):
            if inst.is_idle(now):
                await self.close_instance(inst, now=now)
        await self._wake_instances(now)
        await self._compact_due(now)

    async def _wake_instances(self, now: float) -> None:
        due = sorted((at, iid) for iid, at in self._wakeups.items() if at <= now)
        for _, instance_id in due[:WAKEUPS_PER_ROUND]:
            if instance_id in self.instances:
                self._wakeups.pop(instance_id, None)
                continue
            if self._open_count() >= self.max_open_instances:
                return  # opened when there is room
            self._wakeups.pop(instance_id, None)
            try:
                await self.get(instance_id)
            except (StorageError, OverloadedError) as exc:
                log.warning("cannot open instance %s for its jobs: %s", instance_id, exc)

    async def _compact_due(self, now: float) -> None:
        interval = self.retention.compact_interval
        for inst in list(self.instances.values()):
            last = self._compacted.setdefault(inst.instance_id, now)
            if now - last < interval:
                continue
            self._compacted[inst.instance_id] = now
            inst.holds += 1  # not closed while compacting
            try:
                await self.compact(inst)
            except StorageError as exc:
                log.warning("instance %s: compaction failed: %s", inst.instance_id, exc)
            finally:
                inst.holds -= 1

    async def compact(self, inst: Instance, *, max_steps: int = 50) -> Compaction:
        """Run retention on an open instance through its writer, in bounded steps."""
        r = self.retention
        total = Compaction()
        now = time.time()
        for step in range(max_steps):
            keep = set(inst.sessions)

            async def run(
                tx: WriterTx, first: bool = step == 0, keep: set[str] = keep
            ) -> Compaction:
                return await tx.compact(
                    now,
                    tombstones=r.tombstones,
                    done_jobs=r.done_jobs,
                    failed_jobs=r.failed_jobs,
                    clients=r.clients,
                    keep_clients=keep,
                    checkpoint=first,
                )

            res: Compaction = await inst.in_writer(run)
            total += res
            if not res.more:
                break
        if total.total:
            log.info(
                "instance %s: compacted %d tombstones, %d done and %d failed jobs, %d clients, "
                "%d error reports",
                inst.instance_id,
                total.tombstones,
                total.done_jobs,
                total.failed_jobs,
                total.clients,
                total.errors,
            )
        return total

    # -- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Per-instance state for ``/healthz``."""
        now = asyncio.get_running_loop().time()
        return {
            "open": len(self.instances),
            "max_open": self.max_open_instances,
            "connections": sum(len(i.sessions) for i in self.instances.values()),
            "max_connections": self.max_connections,
            "failed": {
                iid: {
                    "error": f.error,
                    "attempts": f.attempts,
                    "retry_in": max(0.0, f.retry_at - now),
                }
                for iid, f in sorted(self.failed.items())
            },
        }


async def _set_up(schema: Schema, tx: WriterTx) -> None:
    """A new instance's first transaction: its schema version and its search index."""
    await tx.set_schema_version(schema.schema_version)
    await _configure_search(schema, tx)


async def _configure_search(schema: Schema, tx: WriterTx) -> bool:
    """Point the instance's full-text index at the schema's searchable tables (indexing the
    stored rows of a table that just became searchable: server/search.py), and index a batch
    of the rows queued for it (server/search_indexer.py); True if more remain queued."""
    built = await tx.configure_search(search_config(schema))
    if built:
        log.info("indexed searchable table(s) %s", ", ".join(built))
    return await tx.index_search()
