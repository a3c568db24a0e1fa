"""One instance on the server: its database, its single writer, and its sessions.

The writer drains everything queued (pushes from sessions, mutations from actions) into one
transaction: group commit, with a savepoint per mutation so a failing mutation rolls back alone.
After the commit the changed rows go to every session in one synchronous step, so a session
that attaches (and reads the committed state) can never miss a batch.

A storage failure other than lock contention (disk full, I/O error, read-only or corrupt file)
or a bug in the writer fails the instance, and only it: its sessions are closed with 1011
(their clients reconnect with backoff and push again), queued work is refused, and the
registry reopens it with backoff (registry.py). Nothing of the failed batch was committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgspec

from ..core.sequencing import Sequence, classify
from ..errors import (
    InstanceUnavailableError,
    SchemaError,
    StorageError,
)
from ..protocol.codes import CloseCode, ErrorKind
from ..protocol.messages import SKIP, Error, Mutation, MutationErrorReport, PushResponse
from ..protocol.ops import set_op_json
from ..schema import BackendConfig
from ..storage.base import InstanceStore, WriterTx
from ..storage.records import ClientState, RejectedMutation
from ..types import RowKey
from .batch import Direct, Op, Push, Written, call_in_tx
from .fanout import Change, Fanout
from .follower import CommitFollower
from .limits import Retention, ServerLimits
from .mutations import MutationRunner
from .platform import ServerPlatform
from .search import search_config
from .search_indexer import SearchIndexer
from .session import Session

__all__ = ["Instance"]

log = logging.getLogger("synced_store.server")
MAX_BATCH_MUTATIONS = 2000
MAX_TRANSIENT_RETRIES = 5
#: Pushed mutations waiting for the writer before connections stop being read (backpressure).
MAX_QUEUED_MUTATIONS = 20_000
#: Clients whose ``last_mutation_id`` an instance keeps in memory (least recently used go).
CLIENT_CACHE = 20_000


class Instance:
    """An instance's writer and sessions. Run :meth:`run` as a task."""

    def __init__(
        self,
        instance_id: str,
        store: InstanceStore,
        config: BackendConfig,
        *,
        limits: ServerLimits | None = None,
        retention: Retention | None = None,
        append_deltas: bool = True,
    ) -> None:
        self.instance_id = instance_id
        self.store = store
        self.config = config
        self.limits = limits or ServerLimits()
        self.retention = retention or Retention()
        #: ``"open"``; ``"failed"`` once its storage failed (see :meth:`fail`); ``"closed"``.
        self.state = "open"
        #: Why it failed, when it did.
        self.error: BaseException | None = None
        #: Called once with ``(instance, error)`` when the instance fails.
        self.on_failed: Any = None
        #: Jobs of this instance the action runner is running now.
        self.running_jobs = 0
        #: Connections in their handshake (and other callers) holding it open (registry.hold).
        self.holds = 0
        #: Loop time of the last attach, detach or write (idle instances are closed).
        self.last_used = self.opened_at = asyncio.get_running_loop().time()
        self.platform = ServerPlatform(config.services)
        self._mutations = MutationRunner(config, self.platform, self.limits)
        self.sessions: dict[str, Session] = {}
        #: Sends each commit to the sessions (merged, encoded and framed once per group).
        self.fanout = Fanout(self.sessions, deltas=append_deltas)
        self.fanout.start(store.version)
        #: Hands the fan-out every version in order, also those other processes committed.
        self.follower = CommitFollower(
            instance_id, store, self.fanout, self.fail, self._clients_moved
        )
        #: Indexes searchable rows the store queued (before searches, and soon after commits).
        self.search_index = SearchIndexer(
            instance_id, self.in_writer, search_config(config.schema), enabled=store.deferred_search
        )
        #: Whether ``last_mutation_id`` may be cached: not when other processes write too.
        self._cache_lmids = not store.shared
        #: Pushing clients of the batch being written, read at once (shared storage).
        self._batch_owners: dict[str, ClientState] = {}
        self._queue: deque[Push | Direct | Op] = deque()
        self._wake = asyncio.Event()
        self._queued_pushed = 0
        self._room = asyncio.Event()
        self._room.set()
        #: ``(user, last_mutation_id)`` of recently seen clients (the database is the truth).
        self._lmids: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._closing = False
        #: True while a batch is being processed (by the writer task or inline by a caller).
        self._writing = False
        self.on_jobs_enqueued: Any = None
        self.mutations_processed = 0

    # -- sessions --------------------------------------------------------------------------

    async def _client_owner(self, tx: WriterTx, client_id: str) -> tuple[str, int] | None:
        """``(user_id, last_mutation_id)`` of a client id, from cache or the transaction."""
        got = self._lmids.get(client_id)
        if got is None:
            got = await tx.client(client_id)
            if got is not None:
                self._cache_client(client_id, got)
        return got

    async def _prefetch_owners(self, tx: WriterTx, batch: list[Push | Direct | Op]) -> None:
        """Without the cache (shared storage), read the batch's pushing clients at once into
        the transaction's own lookups: one round trip instead of one per client."""
        if self._cache_lmids:
            return
        ids = {item.session.client_id for item in batch if isinstance(item, Push)}
        if len(ids) > 1:
            self._batch_owners = await tx.clients(ids)

    def _cache_client(self, client_id: str, owner: tuple[str, int]) -> None:
        if not self._cache_lmids:  # another process may advance it: the database decides
            return
        cache = self._lmids
        cache[client_id] = owner
        cache.move_to_end(client_id)
        if len(cache) > CLIENT_CACHE:
            cache.popitem(last=False)

    def _clients_moved(self, lmids: dict[str, int]) -> None:
        """Another process committed pushes of these clients (one moved here while its push
        was in flight there): a session of one of them catches up, which brings its
        ``last_mutation_id`` and rejected mutations from the database."""
        for cid, lmid in lmids.items():
            session = self.sessions.get(cid)
            if session is not None and lmid > session.known_lmid:
                session.request_pull()

    def evictable(self) -> bool:
        """Nobody uses it: no session, no connection or caller holding it (``holds``), no work
        queued or being written, no running job. Only such an instance may be closed."""
        return (
            self.state == "open"
            and not self.sessions
            and self.holds == 0
            and not self._queue
            and not self._writing
            and self.running_jobs == 0
        )

    def is_idle(self, now: float) -> bool:
        """:meth:`evictable`, and unused for ``idle_instance_timeout`` seconds."""
        return self.evictable() and now - self.last_used >= self.limits.idle_instance_timeout

    async def committed_lmid(self, client_id: str) -> int:
        """A client's committed ``last_mutation_id`` (never a value of a batch in progress)."""
        got = self._lmids.get(client_id)
        if got is None:
            got = await self.store.client(client_id)
        return 0 if got is None else got[1]

    async def register_client(
        self, client_id: str, user_id: str, told_upto: int
    ) -> tuple[str, int]:
        """Bind ``client_id`` to ``user_id`` if it is new (its first connection), mark it seen
        and forget the error reports it has been told of. Returns ``(owner, lmid)``."""
        cap = self.limits.max_clients_per_user
        owner: ClientState = await self.in_writer(
            lambda tx: tx.register_client(client_id, user_id, told_upto, max_clients=cap)
        )
        self._cache_client(client_id, owner)
        return owner

    async def attach(self, session: Session) -> None:
        """Register a session (kicking an older one with the same client id)."""
        self._check_open()
        self.last_used = asyncio.get_running_loop().time()
        old = self.sessions.get(session.client_id)
        self.sessions[session.client_id] = session
        if old is not None and old is not session:
            await old.kick(4000, "replaced by a newer connection with the same client id")

    def detach(self, session: Session) -> None:
        """Forget a session."""
        session.closed = True
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        self.last_used = asyncio.get_running_loop().time()

    # -- submitting work -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state != "open" or self._closing:
            why = self.error or ("closing" if self.state == "open" else self.state)
            raise InstanceUnavailableError(f"instance {self.instance_id} is unavailable: {why}")

    def _submit(self, item: Push | Direct | Op) -> None:
        self._check_open()
        self._queue.append(item)
        self._wake.set()

    def submit_push(self, session: Session, mutations: list[Mutation]) -> None:
        """Queue a client's push for the writer."""
        self._queued_pushed += len(mutations)
        self._submit(Push(session, mutations))

    async def wait_for_room(self) -> None:
        """Return once fewer than ``MAX_QUEUED_MUTATIONS`` pushed mutations wait for the writer.

        The endpoint awaits this before reading the next frame, so a client that pushes faster
        than the instance commits is slowed down by TCP instead of growing the queue.
        """
        while self._queued_pushed >= MAX_QUEUED_MUTATIONS:
            self._room.clear()
            await self._room.wait()

    async def mutate(
        self, user_id: str, name: str, args: Any, source: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        """Run one mutation through the writer and return once it is committed.

        Raises the mutator's error (nothing is committed for it) if it fails. ``system=fn``
        runs ``fn(ctx)`` instead of the named mutator (server/external.py's delivery).
        """
        item = Direct(user_id, name, args, source or {"type": "system", "user_id": user_id}, **kw)
        await self._run_now_or_queue(item)
        await item.future

    async def run_system(self, item: Direct) -> None:
        """Commit a system item (hooks, members: ``server/members.py``) like :meth:`mutate`."""
        await self._run_now_or_queue(item)
        await item.future

    async def in_writer(self, fn: Callable[[WriterTx], Any]) -> Any:
        """Run ``fn(tx)`` inside the writer's next transaction (awaited if it returns an
        awaitable); returns its result."""
        item = Op(fn)
        await self._run_now_or_queue(item)
        return await item.future

    async def _run_now_or_queue(self, item: Direct | Op) -> None:
        """Commit ``item`` in the calling task if the writer is idle, else queue it.

        An idle writer has nothing queued and no batch in progress, so committing here keeps
        the one-writer order and saves waking the writer: an action streaming a reply commits
        each step as soon as it has it. The caller then yields one loop turn, as it would
        waiting for the writer, so the sessions send the commit and a loop of mutations
        never starves other tasks. A caller cancelled in the middle (an action's timeout)
        rolls its mutation back: nothing of it is committed.
        """
        self._check_open()
        if self._writing or self._queue or self._closing:
            self._submit(item)
            return
        self.last_used = asyncio.get_running_loop().time()
        self._writing = True
        try:
            await self._process_with_retry([item])
        except BaseException:
            # The caller was cancelled mid-commit: the batch rolled back and its future holds
            # the failure, which nobody else will read.
            if item.future.done() and not item.future.cancelled():
                item.future.exception()
            raise
        finally:
            self._writing = False
            if self._queue or self._closing:
                self._wake.set()  # the writer skipped what arrived meanwhile (or a stop)
        await asyncio.sleep(0)

    # -- the writer ------------------------------------------------------------------------

    async def run(self) -> None:
        """The writer loop. Runs until :meth:`stop`."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._writing:  # a caller is committing inline; it wakes us when done
                continue
            self._writing = True
            try:
                await self._drain()
            finally:
                self._writing = False
                self.last_used = asyncio.get_running_loop().time()
            if self._closing:
                self._refuse_queued(InstanceUnavailableError(f"instance {self.instance_id} closed"))
                return

    def _refuse_queued(self, err: StorageError) -> None:
        """Fail the callers of whatever is still queued (pushes are simply dropped: their
        clients push again after reconnecting)."""
        queued = list(self._queue)
        self._queue.clear()
        self._queued_pushed = 0
        self._room.set()
        self._fail_batch([i for i in queued if not isinstance(i, Push)], err)

    async def _drain(self) -> None:
        while self._queue:
            batch: list[Push | Direct | Op] = []
            count = 0
            while self._queue and count < MAX_BATCH_MUTATIONS:
                item = self._queue.popleft()
                batch.append(item)
                if isinstance(item, Push):
                    count += len(item.mutations)
                    self._queued_pushed -= len(item.mutations)
                else:
                    count += 1
            if self._queued_pushed < MAX_QUEUED_MUTATIONS:
                self._room.set()
            await self._process_with_retry(batch)

    def stop(self) -> None:
        """Ask the writer to finish what is queued and return; new work is refused from now
        on (:class:`InstanceUnavailableError`)."""
        self._closing = True
        self._wake.set()

    async def _process_with_retry(self, batch: list[Push | Direct | Op]) -> None:
        delay = 0.01
        for attempt in range(MAX_TRANSIENT_RETRIES + 1):
            try:
                await self._process(batch)
                return
            except StorageError as exc:
                if not exc.transient:
                    self._fail_batch(batch, exc)
                    self.fail(exc)
                    return
                if attempt == MAX_TRANSIENT_RETRIES:
                    log.error("instance %s: batch failed: %s", self.instance_id, exc)
                    self._fail_batch(batch, exc)
                    return
                log.warning(
                    "instance %s: transient storage error, retrying: %s", self.instance_id, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as exc:  # a bug in the writer: this instance stops, not the server
                log.exception("instance %s: writer failed", self.instance_id)
                err = InstanceUnavailableError(f"writer failed: {exc!r}")
                self._fail_batch(batch, err)
                self.fail(err)
                return
            except BaseException:
                self._fail_batch(batch, StorageError("writer interrupted", transient=True))
                raise

    def fail(self, exc: BaseException) -> None:
        """Stop this instance after a storage failure: close its sessions with 1011 (their
        clients reconnect and push again), refuse queued and new work, stop the writer, and
        tell the registry (``on_failed``), which closes the store and reopens with backoff."""
        if self.state != "open":
            return
        self.state = "failed"
        self.error = exc
        log.error(
            "instance %s failed: %s (its clients reconnect; it reopens with backoff)",
            self.instance_id,
            exc,
        )
        err = exc if isinstance(exc, StorageError) else InstanceUnavailableError(str(exc))
        self._refuse_queued(err)
        self.fanout.close()
        for session in list(self.sessions.values()):
            session.end(CloseCode.INTERNAL_ERROR, "instance unavailable; reconnect later")
        self.follower.close()
        self.search_index.close()
        self.stop()
        if self.on_failed is not None:
            self.on_failed(self, exc)

    def _fail_batch(self, batch: list[Push | Direct | Op], exc: StorageError) -> None:
        # Nothing was committed: clients keep their mutations pending and push them again
        # (after a reconnect when the instance failed: its sessions are closed).
        for item in batch:
            if isinstance(item, Direct | Op):
                if not item.future.done():
                    item.future.set_exception(exc)
            elif exc.transient:
                item.session.send_message(Error(kind=ErrorKind.STORAGE_BUSY, message=str(exc)))

    async def _process(self, batch: list[Push | Direct | Op]) -> None:
        follower = self.follower
        tx = await self.store.begin()
        try:
            # Commits of other processes since the fan-out's version (shared backends only).
            gap = await follower.read_gap(tx)
            version, changes, lmids, errors, results, replies, jobs = await self._write(tx, batch)
            # A batch that changed no synced row and no client (job bookkeeping, idle claims)
            # commits without a new version: clients have nothing to learn from it.
            bumped = bool(changes or lmids)
            follower.landing = True
            await tx.commit(version if bumped else tx.version)
        except BaseException:
            await tx.rollback()
            follower.committed(None, 0, None, {}, {})  # nothing landed
            raise
        # Committed: update caches, then fan out synchronously (no await until done).
        self.mutations_processed += sum(
            len(i.mutations) if isinstance(i, Push) else int(isinstance(i, Direct)) for i in batch
        )
        for item in batch:
            if isinstance(item, Push):
                cid = item.session.client_id
                if cid in lmids:
                    self._cache_client(cid, (item.session.user_id, lmids[cid]))
        for key, ch in changes.items():
            if ch is not None:
                op = set_op_json(key, ch[0], ch[2])
                changes[key] = (ch[0], ch[1], msgspec.Raw(op), len(op))
        follower.committed(gap, version, changes if bumped else None, lmids, errors)
        if bumped:
            self.search_index.committed(version, changes)
        for session, msg in replies:
            session.send_message(msg)
        for item, res in results:
            if item.future.done():
                continue
            if isinstance(res, BaseException):
                item.future.set_exception(res)
            else:
                item.future.set_result(res)
        if jobs and self.on_jobs_enqueued is not None:
            self.on_jobs_enqueued()

    async def _write(self, tx: WriterTx, batch: list[Push | Direct | Op]) -> Written:
        """Run a batch inside ``tx``: every item in a savepoint of its own."""
        version = tx.version + 1
        self._batch_owners = {}
        await self._prefetch_owners(tx, batch)
        changes: dict[RowKey, Change] = {}
        lmids: dict[str, int] = {}
        errors: dict[str, list[MutationErrorReport]] = {}
        direct_results: list[tuple[Direct | Op, Any]] = []
        replies: list[tuple[Session, Error | PushResponse]] = []
        jobs = 0
        for item in batch:
            if isinstance(item, Op):
                await tx.savepoint()
                try:
                    res: Any = await call_in_tx(item.fn, tx)
                except StorageError:
                    raise
                except Exception as exc:
                    if tx.broken is not None:  # it swallowed a storage error
                        raise tx.broken from exc
                    await tx.rollback_savepoint()
                    res = exc
                else:
                    await tx.release()
                direct_results.append((item, res))
                continue
            if isinstance(item, Direct):
                if item.from_schema is not None and tx.schema_version != item.from_schema:
                    direct_results.append((item, None))  # another process migrated it first
                    continue
                err, n = await self._mutations.run(
                    tx,
                    item.user_id,
                    item.name,
                    item.args,
                    item.source,
                    version,
                    changes,
                    system=item.system,
                    after=item.after,
                )
                jobs += n
                direct_results.append((item, err))
                continue
            session = item.session
            cid = session.client_id
            last = lmids.get(cid)
            if last is None:
                owner = self._batch_owners.get(cid) or await self._client_owner(tx, cid)
                last = owner[1] if owner else 0
            start = last
            for m in item.mutations:
                seq = classify(m.id, last)
                if seq is Sequence.ALREADY_PROCESSED:
                    continue
                if seq is Sequence.GAP:
                    gap = Error(
                        kind=ErrorKind.MUTATION_ID_GAP,
                        message=f"mutation id {m.id} skips ahead of "
                        f"last_mutation_id {last}; push from {last + 1}",
                    )
                    replies.append((session, gap))
                    break
                if m.name == SKIP:  # superseded by a later mutation with its dedupe key
                    last = m.id
                    continue
                err, n = await self._mutations.run(
                    tx,
                    session.user_id,
                    m.name,
                    m.args,
                    {"type": "user", "user_id": session.user_id},
                    version,
                    changes,
                    from_version=session.schema_version if m.v is None else m.v,
                )
                jobs += n
                last = m.id
                if err is not None:
                    e = MutationErrorReport(
                        id=m.id,
                        name=m.name,
                        kind=getattr(err, "kind", ErrorKind.MUTATOR_ERROR),
                        message=str(err) or type(err).__name__,
                    )
                    errors.setdefault(cid, []).append(e)
                    report: RejectedMutation = {
                        "id": e.id,
                        "name": e.name,
                        "kind": e.kind,
                        "message": e.message,
                    }
                    await tx.add_error(cid, report)
            if cid in errors:
                await tx.prune_errors(cid, self.retention.errors_per_client)
            if last != start:
                lmids[cid] = last
                await tx.set_client(cid, session.user_id, last, version)
            replies.append((session, PushResponse(last_mutation_id=last)))
        return version, changes, lmids, errors, direct_results, replies, jobs

    async def migrate_schema(self) -> None:
        """Bring the stored data up to the schema version (``migrate_data`` steps), once."""
        schema = self.config.schema
        stored = self.store.schema_version
        if stored is None or stored == schema.schema_version:
            return
        if stored > schema.schema_version or not schema.can_migrate_from(stored):
            raise SchemaError(
                f"instance {self.instance_id} holds data of schema version {stored}; this "
                f"server has version {schema.schema_version} and no migration path"
            )
        for v in range(stored, schema.schema_version):
            step = schema.migrations[v]
            item = Direct(
                "$system",
                f"$migrate{v}to{v + 1}",
                None,
                {"type": "system"},
                system=step.migrate_data or _noop,
                after=lambda tx, v=v: tx.set_schema_version(v + 1),
                from_schema=v,
            )
            self._submit(item)
            await item.future
            log.info(
                "instance %s: migrated data from schema version %d to %d",
                self.instance_id,
                v,
                v + 1,
            )

    async def close(self) -> None:
        """Close the database (after the writer stopped)."""
        self.follower.close()
        self.fanout.close()
        self.search_index.close()
        if self.state == "open":
            self.state = "closed"
        await self.store.close()


async def _noop(ctx: Any) -> None:
    return None
