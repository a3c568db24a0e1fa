"""The plain records the storage interface takes and returns (no driver types in them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict

from ..errors import StorageError, ValidationError
from ..types import EntryKey, JobStatus

__all__ = [
    "ChangedRow",
    "Changes",
    "ClaimedJob",
    "ClientInfo",
    "ClientState",
    "Compaction",
    "DatabaseSchemaError",
    "HistoryCompactedError",
    "InstanceSummary",
    "JobInfo",
    "JobStateError",
    "JobStatus",
    "OpEncoder",
    "RejectedMutation",
    "Row",
    "ScanRow",
    "StoredRow",
]

#: A live row as the writer reads it: ``(sort key, value)``.
Row = tuple[str, Any]
#: A row of a scan: ``(EntryKey(sort key, item key), value)``.
ScanRow = tuple[EntryKey, Any]

#: Turns one stored row change into what a catch-up part carries:
#: ``encode(ns, table, item, sort_key, value_json, deleted) -> text``. ``value_json`` is the
#: row's value exactly as it was written (None for a tombstone). The server passes
#: :func:`synced_store.protocol.ops.op_text`: storage itself knows nothing of the wire.
OpEncoder = Callable[[str, str, str, str, str | None, bool], str]


class ChangedRow(NamedTuple):
    """A committed row change, as :meth:`InstanceStore.changes_since` reads it back."""

    #: The version that made the change.
    version: int
    ns: str
    table: str
    item: str
    sort_key: str
    #: The value's JSON text exactly as written; None for a tombstone.
    value: str | None


@dataclass(frozen=True)
class Changes:
    """Every row changed after a version, up to :attr:`upto` (one consistent read)."""

    #: The instance's committed version the read stopped at.
    upto: int
    #: The changed rows, latest change of each row only; None when more rows changed than the
    #: caller's ``limit`` (the caller then starts over from the database instead).
    rows: list[ChangedRow] | None
    #: ``last_mutation_id`` of every client whose row those versions changed, by client id
    #: (a client whose push another process committed).
    clients: dict[str, int] = field(default_factory=dict)


class ClientState(NamedTuple):
    """A client id's owner and the last mutation id the server applied for it."""

    user_id: str
    last_mutation_id: int


class RejectedMutation(TypedDict):
    """A permanent mutation failure, kept for its client until the client was told."""

    id: int
    name: str
    kind: str
    message: str


class ClaimedJob(TypedDict):
    """A job an action runner claimed: now ``running``, ``attempts`` counts this attempt."""

    id: int
    name: str
    input: Any
    user_id: str
    attempts: int


class JobStateError(ValidationError):
    """A job asked for by id cannot be retried: it does not exist (``status`` None), or it is
    running or done."""

    def __init__(self, job_id: int, status: JobStatus | None) -> None:
        self.job_id = job_id
        self.status = status
        if status is None:
            super().__init__(f"no job {job_id}")
        else:
            super().__init__(
                f"job {job_id} is {status}; only failed or pending jobs can be retried"
            )


class HistoryCompactedError(StorageError):
    """Tombstones a catch-up needed were forgotten while it ran: the client must reconnect
    (and gets a full reset)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class DatabaseSchemaError(StorageError):
    """The database has no synced-store schema, or one of a version this code does not know:
    a server refuses to start on it (run ``synced-store db upgrade``, or upgrade synced-store).
    """

    kind = "database_schema"

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass
class Compaction:
    """What one compaction step removed; ``more`` when it stopped at its limit."""

    tombstones: int = 0
    done_jobs: int = 0
    failed_jobs: int = 0
    clients: int = 0
    errors: int = 0
    more: bool = False

    def __iadd__(self, other: Compaction) -> Compaction:
        self.tombstones += other.tombstones
        self.done_jobs += other.done_jobs
        self.failed_jobs += other.failed_jobs
        self.clients += other.clients
        self.errors += other.errors
        self.more = other.more
        return self

    @property
    def total(self) -> int:
        """Rows removed in all."""
        return self.tombstones + self.done_jobs + self.failed_jobs + self.clients + self.errors


# -- admin reads (synced-store inspect, actions list) ------------------------------------------


@dataclass(frozen=True)
class InstanceSummary:
    """One instance at a glance, read in one consistent snapshot."""

    instance_id: str
    #: Where it is stored (a file path for SQLite).
    location: str
    #: Its size on disk, when the backend can tell.
    bytes: int | None
    version: int
    schema_version: int | None
    #: Clients whose cookie is older than this get a full reset.
    horizon: int
    rows: int
    tombstones: int
    #: Live rows per table name (every namespace), by table name.
    tables: dict[str, int]
    clients: int
    #: Jobs per status, every :class:`JobStatus` present (0 when none).
    jobs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredRow:
    """A live row with the version that last changed it."""

    ns: str
    table: str
    item_key: str
    sort_key: str
    version: int
    value: Any


@dataclass(frozen=True)
class ClientInfo:
    """A known client id: its owner, last applied mutation id and the version it was last seen
    at (retention forgets clients not seen for a while)."""

    client_id: str
    user_id: str
    last_mutation_id: int
    version: int


@dataclass(frozen=True)
class JobInfo:
    """A job of the action outbox, as ``synced-store actions list`` shows it."""

    id: int
    name: str
    status: JobStatus
    attempts: int
    user_id: str
    input: Any
    output: Any
    last_error: str | None
    next_run_at: float
    created_at: float
    updated_at: float
