"""The storage interface: what server/ and cli/ need from a database, and nothing more.

Two levels. A :class:`StorageBackend` holds every instance (SQLite: a data dir with one file
per instance; a network database: one schema for all) and opens an :class:`InstanceStore` per
instance. The store's one **writer** works in a :class:`WriterTx`; everything else reads
committed data. Methods that may need a round trip to a database server are coroutines; an
embedded backend runs its synchronous driver inside them (SQLite never leaves the event loop
on the writer's path).

Guarantees every backend gives (``tests/storage/`` is the contract suite):

* **One writer per instance, serializable.** At most one :class:`WriterTx` of an instance is
  open at a time (a backend shared by several processes serializes them with a lock taken in
  :meth:`InstanceStore.begin`, and :attr:`WriterTx.version` is then the version another
  process may have committed meanwhile). What it wrote is visible to its own reads at once and
  to anyone else only after :meth:`WriterTx.commit`; :meth:`WriterTx.rollback` leaves no
  trace.
* **Versions.** An instance has one version, raised only by a commit that passes a new one.
  Every row write and tombstone records the version that made it; a commit that keeps the
  version (job bookkeeping) changes no row.
* **Shared backends** (:attr:`StorageBackend.shared`: several server processes serve the same
  instances) tell each open store when another process committed (:meth:`InstanceStore.watch`)
  and hand out the changes (:meth:`InstanceStore.changes_since`); claimed jobs carry a lease
  that the running process renews (:meth:`InstanceStore.renew_jobs`) and another process
  re-claims once it ended.
* **Values verbatim.** A row's value is stored as the JSON bytes the writer passed and read
  back as exactly those bytes (catch-ups splice them into the wire unchanged), so a backend
  must store text, never a re-encoding (no ``jsonb``).
* **Failures are StorageErrors.** Every driver error becomes a
  :class:`~synced_store.errors.StorageError`: ``transient`` when retrying the same transaction
  may succeed (lock contention, a serialization failure), else
  :class:`~synced_store.errors.InstanceUnavailableError` (the instance stops and is reopened
  with backoff). An error inside a writer transaction sets :attr:`WriterTx.broken`: it can
  then only roll back, and :meth:`WriterTx.commit` raises that error.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from ..errors import StorageError
from ..types import EntryKey, RowKey
from .records import (
    Changes,
    ClaimedJob,
    ClientInfo,
    ClientState,
    Compaction,
    InstanceSummary,
    JobInfo,
    JobStatus,
    OpEncoder,
    RejectedMutation,
    Row,
    ScanRow,
    StoredRow,
)
from .search_index import SearchHit
from .windows import WindowPlan

__all__ = [
    "DEFAULT_JOB_LEASE",
    "CatchUp",
    "CommittedReader",
    "InstanceInspector",
    "InstanceStore",
    "RemoteCommits",
    "RowReader",
    "StorageBackend",
    "WriterTx",
]

#: Seconds a claimed job belongs to its runner before a shared backend may hand it to another
#: (the runner renews it while the job runs: see :meth:`InstanceStore.renew_jobs`).
DEFAULT_JOB_LEASE = 300.0
#: What :meth:`InstanceStore.watch` calls: with the version another process committed, or
#: with None when notifications may have been missed (the watcher then reads what changed).
RemoteCommits = Callable[[int | None], None]


class RowReader(Protocol):
    """Live rows (tombstones are never returned)."""

    async def read(self, key: RowKey) -> Row | None:
        """``(sort_key, value)`` of a live row, or None."""

    async def scan(
        self,
        ns: str,
        table: str,
        start: EntryKey | None,
        *,
        exclusive: bool,
        reverse: bool,
        limit: int,
    ) -> list[ScanRow]:
        """At most ``limit`` rows of one table in ``(sort_key, item_key)`` order (descending
        when ``reverse``), from ``start`` (None: the first, or with ``reverse`` the last row;
        ``exclusive``: leave a row at ``start`` out). Fewer than ``limit`` means the end."""


class CommittedReader(RowReader, Protocol):
    """Committed rows, read outside the writer's transaction (an action's read-only tables)."""

    async def scan(
        self,
        ns: str,
        table: str,
        start: EntryKey | None,
        *,
        exclusive: bool,
        reverse: bool,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[ScanRow]:
        """:meth:`RowReader.scan`; with ``max_bytes``, it also stops after the row whose
        value (its stored JSON) brings the values read to ``max_bytes`` or more (at least one
        row): the rows after it are never read, so a page of large rows costs about
        ``max_bytes`` of memory, not ``limit`` rows. Fewer than ``limit`` rows then mean the
        end, or that the values read reached ``max_bytes``."""

    async def search(
        self,
        table: str,
        words: Sequence[str],
        namespaces: Sequence[str],
        limit: int,
        *,
        newest_first: bool,
    ) -> list[SearchHit]:
        """At most ``limit`` live rows of searchable ``table`` in ``namespaces`` whose text
        holds every one of ``words`` (core/search.py's :func:`parse_query`), newest first by
        the table's timestamp field (rows without one last) or, without ``newest_first``, by
        relevance. A table the index does not cover (:meth:`WriterTx.configure_search`)
        has no hits."""

    async def close(self) -> None:
        """Release what the reader holds (safe to call twice)."""


class WriterTx(RowReader, Protocol):
    """The writer's open transaction on one instance (see the module doc's guarantees).

    Opened by :meth:`InstanceStore.begin`; ended by exactly one :meth:`commit` or
    :meth:`rollback`. Reads see the transaction's own writes.
    """

    #: The instance's committed version when the transaction began (a commit passes a new one).
    version: int
    #: The schema version of the stored data as this transaction sees it (None: not recorded).
    schema_version: int | None
    #: The storage error that failed a statement of this transaction, if one did.
    broken: StorageError | None

    # -- the transaction -------------------------------------------------------------------

    async def commit(self, version: int) -> None:
        """Commit, recording ``version`` (>= :attr:`version`) as the instance's version.
        Raises :attr:`broken` if set (nothing is committed then; roll back).

        :attr:`InstanceStore.version` takes the new value as the last step, with no suspension
        after it: the writer hands the batch to its sessions before any other task can see
        the new version (a session catching up reads it), so no commit falls between them.
        """

    async def rollback(self) -> None:
        """Abandon the transaction. Never raises; safe after a failed commit or a driver that
        already rolled back."""

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        """The rows changed after version ``after`` up to :attr:`version` (what other
        processes committed before this transaction took the lock), read inside the
        transaction; ``rows`` is None if more than ``limit`` changed. Raises
        :class:`~synced_store.storage.records.HistoryCompactedError` if tombstones after
        ``after`` may have been forgotten (the horizon is above it)."""

    async def savepoint(self) -> None:
        """Open the savepoint (one at a time: the writer opens one per mutation)."""

    async def release(self) -> None:
        """Keep the savepoint's work (it commits with the transaction)."""

    async def rollback_savepoint(self) -> None:
        """Undo the savepoint's work and close it; the transaction goes on."""

    # -- rows ------------------------------------------------------------------------------

    async def write(self, key: RowKey, sort_key: str, encoded: bytes, version: int) -> None:
        """Upsert a row (reviving a tombstone) with value ``encoded`` (JSON, kept verbatim) at
        ``version``."""

    async def remove(self, key: RowKey, version: int) -> bool:
        """Turn a live row into a tombstone at ``version``; False if there was no live row."""

    # -- clients and their rejected mutations ---------------------------------------------

    async def client(self, client_id: str) -> ClientState | None:
        """A known client id's owner and ``last_mutation_id`` (as this transaction sees it)."""

    async def clients(self, client_ids: Collection[str]) -> dict[str, ClientState]:
        """The known ones of ``client_ids`` (as this transaction sees them), in one read."""

    async def register_client(
        self, client_id: str, user_id: str, told_upto: int, *, max_clients: int | None = None
    ) -> ClientState:
        """Bind a connecting client id to its user (the first user to connect with it owns it)
        and mark it seen at the current version; forget its rejected-mutation reports up to
        ``min(told_upto, last_mutation_id)``. Returns the owner's state: a client id of another
        user is left unchanged. A new client id of a user who has ``max_clients`` already
        raises :class:`~synced_store.errors.QuotaExceededError`."""

    async def set_client(
        self, client_id: str, user_id: str, last_mutation_id: int, version: int
    ) -> None:
        """Record a client's ``last_mutation_id`` (in the transaction of its mutations)."""

    async def add_error(self, client_id: str, report: RejectedMutation) -> None:
        """Keep a rejected mutation's report for its client (the message may be shortened)."""

    async def prune_errors(self, client_id: str, keep: int) -> None:
        """Keep only the newest ``keep`` reports of a client."""

    # -- the action outbox -----------------------------------------------------------------

    async def add_job(self, name: str, input: Any, user_id: str, now: float) -> int:
        """Enqueue a pending job (in the transaction of the mutation that asked); its id."""

    async def unfinished_jobs(self, user_id: str) -> tuple[int, int]:
        """``(of this user, of the instance)``: jobs pending or running."""

    async def claim_jobs(
        self,
        now: float,
        limit: int,
        skip_users: Collection[str] = (),
        *,
        lease: float = DEFAULT_JOB_LEASE,
    ) -> list[ClaimedJob]:
        """Mark up to ``limit`` due pending jobs ``running`` (each attempt counted) and return
        them, oldest first, leaving out jobs of ``skip_users``. A backend shared by several
        processes also re-claims running jobs whose ``lease`` (seconds from ``now``) ended."""

    async def finish_job(
        self,
        job_id: int,
        status: JobStatus | str,
        *,
        now: float,
        output: Any = None,
        error: str | None = None,
        next_run_at: float = 0.0,
    ) -> None:
        """Record a job's outcome: ``done`` (with ``output``), ``failed`` (kept for a retry by
        hand) or ``pending`` again (retried at ``next_run_at``)."""

    async def next_due(self) -> float | None:
        """When the earliest pending job is due (None: no pending job)."""

    async def requeue_running(self, now: float) -> int:
        """Make jobs abandoned by a stopped process pending again (at least once); how many.
        A backend with one process per instance (SQLite) re-queues every running job when
        the instance opens; a shared backend only those whose lease ended before ``now``."""

    async def retry_jobs(self, job_ids: Sequence[int] | None, *, now: float) -> list[int]:
        """Put jobs back to ``pending`` with a fresh attempt budget, due at once; returns
        their ids. ``None``: every failed job. A given job that does not exist, or is running
        or done, raises :class:`~synced_store.errors.ValidationError` (nothing changes)."""

    # -- schema and retention --------------------------------------------------------------

    async def set_schema_version(self, version: int) -> None:
        """Record the schema version of the stored data (:attr:`schema_version` too)."""

    async def configure_search(self, tables: Mapping[str, tuple[str, str | None]]) -> list[str]:
        """Make the full-text index cover exactly ``tables`` (``{table: (text field,
        timestamp field or None)}``, the schema's searchable tables): a table new to it, or
        whose fields changed, is indexed from its stored rows; a table no longer listed loses
        its entries. Returns the tables (re)indexed. From then on every write, tombstone and
        deletion of their rows reaches the index in the same transaction (a rollback leaves
        no trace), whatever writes it: at once, or, with :attr:`InstanceStore.deferred_search`,
        queued in the transaction for :meth:`index_search`."""

    async def index_search(self, upto: int | None = None) -> bool:
        """Index a bounded batch of the rows queued for the full-text index at versions up to
        ``upto`` (None: any), oldest first, from their current value (see
        :attr:`InstanceStore.deferred_search`); True if more such rows remain queued. A
        backend that indexes every write at once has nothing queued (False)."""

    async def compact_tombstones(self, before_version: int, limit: int | None = None) -> int:
        """Raise the tombstone horizon to ``before_version`` (never lowers it), then forget up
        to ``limit`` tombstones at or before it; how many went. Cookies older than the horizon
        get a full reset, so no client catches up across a forgotten deletion."""

    async def compact(
        self,
        now: float,
        *,
        tombstones: float,
        done_jobs: float,
        failed_jobs: float,
        clients: float,
        keep_clients: Collection[str] = (),
        limit: int = 1000,
        checkpoint: bool = True,
    ) -> Compaction:
        """One bounded step of retention; ages in seconds before ``now``.

        Records a checkpoint ``(now, version)`` first (unless ``checkpoint`` is False: the
        later steps of one pass), then forgets tombstones older than ``tombstones`` (by the
        checkpoints: an instance never compacted before forgets none), done and failed jobs,
        clients not seen for ``clients`` (except ``keep_clients``, connected now) and the
        reports of forgotten clients, at most ``limit`` of each; ``more`` if any hit it.
        """


class CatchUp(Protocol):
    """What one client needs to reach :attr:`upto`, read in bounded parts.

    From a cookie (``base``): every change after it, tombstones included. From nothing, or a
    cookie older than the horizon or newer than the instance (:attr:`reset`): every live row.
    Only rows of the given namespaces, and none changed after :attr:`upto`, however long the
    client takes to read the parts; no transaction is held between parts. A compaction that
    forgets tombstones the catch-up still needs makes the next part raise
    :class:`~synced_store.storage.records.HistoryCompactedError`.
    """

    #: The version the parts add up to.
    upto: int
    #: True for a full reset; final only after the first :meth:`next_part`.
    reset: bool
    #: True once the last part was read.
    done: bool
    #: A reset's windows: ``windows.floors`` holds, per ``(ns, table)`` cut short, the oldest
    #: row sent.
    windows: WindowPlan

    async def next_part(self, max_bytes: int) -> list[str]:
        """The next encoded rows, about ``max_bytes`` of text in all (at least one row, so a
        row larger than ``max_bytes`` still travels). Empty once :attr:`done`."""

    async def close(self) -> None:
        """Release its resources, also while a :meth:`next_part` runs (a cancelled task)."""


class InstanceStore(Protocol):
    """One instance's storage, opened by :meth:`StorageBackend.open_instance`."""

    #: The newest committed version this process has taken in: set by :meth:`WriterTx.commit`
    #: and, on a shared backend, by the server when it takes in what other processes committed
    #: (catch-ups stop here, so a session never runs ahead of the server's fan-out).
    version: int
    #: True if other processes may write this instance too (see :attr:`StorageBackend.shared`).
    shared: bool
    #: True if the full-text index takes in written rows only at :meth:`WriterTx.index_search`
    #: (SQLite); False if every write updates it in its own statement (PostgreSQL).
    deferred_search: bool
    #: The tombstone horizon this process knows of (compaction raises it).
    horizon: int
    #: The schema version of the stored data (None: not recorded yet, a new instance).
    schema_version: int | None

    async def begin(self) -> WriterTx:
        """Open the writer's transaction (waiting for the instance's lock, if shared)."""

    async def client(self, client_id: str) -> ClientState | None:
        """A client's committed owner and ``last_mutation_id``."""

    async def errors_between(self, client_id: str, after: int, upto: int) -> list[RejectedMutation]:
        """Committed reports of a client for mutation ids in ``(after, upto]``, oldest first."""

    async def next_due(self) -> float | None:
        """When the earliest committed pending job is due (None: no pending job)."""

    def watch(self, callback: RemoteCommits) -> None:
        """Call ``callback`` (on the event loop, never re-entrantly) when another process
        committed a new version of this instance, or with None when such news may have been
        lost (a reconnect); until :meth:`close`. A backend with one process per instance never
        calls it."""

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        """The committed rows changed after version ``after``, up to the newest committed
        version, in one consistent read (``rows`` None if more than ``limit`` changed). Raises
        :class:`~synced_store.storage.records.HistoryCompactedError` if tombstones after
        ``after`` may have been forgotten."""

    async def renew_jobs(self, job_ids: Collection[int], *, now: float, lease: float) -> None:
        """Extend the lease of jobs this process is running to ``now + lease`` (a backend with
        one process per instance needs no lease: a no-op there)."""

    def catch_up(
        self,
        base: int | None,
        *,
        namespaces: Sequence[str],
        encode: OpEncoder,
        windows: Mapping[str, int] | None = None,
        window_bytes: int = 1 << 20,
    ) -> CatchUp:
        """A catch-up from cookie ``base`` to :attr:`version`, of rows in ``namespaces`` (in
        this order for a reset), each row turned into text by ``encode``. Reads nothing yet:
        the version it stops at is the one the caller has been told of. A reset sends of each
        table in ``windows`` (``{table: N}``) only its latest N rows, at most
        ``window_bytes`` of them in all (storage/windows.py; ``CatchUp.windows`` tells which
        rows it left out)."""

    def reader(self) -> CommittedReader:
        """A read-only view of committed rows (an action's context)."""

    async def vacuum(self) -> None:
        """Return free space to the operating system, if the backend can (outside a tx)."""

    async def close(self) -> None:
        """Roll back an open transaction and release the instance."""


class InstanceInspector(Protocol):
    """Read-only admin reads of one instance (``synced-store inspect``, ``actions list``);
    never creates or changes anything, safe while a server runs."""

    async def summary(self) -> InstanceSummary:
        """Counts, versions and job states, from one consistent snapshot."""

    async def rows(self, table: str | None = None) -> list[StoredRow]:
        """Live rows (of one table), by namespace, table, sort key and item key."""

    async def clients(self) -> list[ClientInfo]:
        """Every known client id, by client id."""

    async def jobs(self, status: JobStatus | None = None) -> list[JobInfo]:
        """The jobs of the outbox (with one status), oldest first."""

    async def close(self) -> None:
        """Release the connection."""


class StorageBackend(Protocol):
    """Where every instance lives; the registry, the action runner and the CLI go through it."""

    #: Where the instances are, for people (``data dir ./data``).
    description: str
    #: True if several server processes may serve the same instances at once (PostgreSQL):
    #: they then learn of each other's commits through :meth:`InstanceStore.watch`, do not
    #: cache what another process may change, and look for jobs whose lease ended.
    shared: bool

    def validate_instance_id(self, instance_id: str) -> str:
        """``instance_id`` if this backend can store it, else raise
        :class:`~synced_store.errors.ValidationError`."""

    def location(self, instance_id: str) -> str:
        """Where one instance is stored, for logs and messages."""

    async def start(self) -> None:
        """Get ready to serve (create the data dir, connect); raises StorageError."""

    async def check(self) -> str | None:
        """Can new data be written now? None if so, else why not (``/healthz``)."""

    async def exists(self, instance_id: str) -> bool:
        """True if the instance has been created (``instance_id`` is valid)."""

    async def list_instances(self) -> list[str]:
        """Every instance id, sorted."""

    async def instances_with_unfinished_jobs(self) -> list[str]:
        """Ids of instances whose outbox holds pending or running jobs (opened at start-up
        so their jobs resume); instances that cannot be read are left out."""

    async def instances_with_due_jobs(self, now: float) -> list[str]:
        """Ids of instances holding a pending job due by ``now``, or (shared backends) a
        running job whose lease ended before ``now``: what a process should open to claim."""

    async def open_instance(
        self, instance_id: str, *, create: bool = True, lock_timeout: float | None = None
    ) -> InstanceStore:
        """Open an instance for its writer, creating it unless ``create`` is False.
        ``lock_timeout``: how long a statement may wait for another process's lock (the CLI
        waits for a running server; the server itself never waits long on its event loop).
        Raises :class:`~synced_store.errors.InstanceUnavailableError` if it cannot."""

    async def inspect(self, instance_id: str) -> InstanceInspector:
        """Open an existing instance for admin reads (never creates it)."""

    async def close(self) -> None:
        """Release everything (after every instance store was closed)."""
