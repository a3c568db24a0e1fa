"""Canonical server state behind one interface (base.py); SQLite is the embedded default.

server/ and cli/ use only :mod:`synced_store.storage.base` (and its records); a backend
module (sqlite_backend.py) is named only where a server or a command is set up.
"""

from .base import (
    CatchUp,
    CommittedReader,
    InstanceInspector,
    InstanceStore,
    RowReader,
    StorageBackend,
    WriterTx,
)
from .ids import validate_instance_id
from .records import (
    ClaimedJob,
    ClientInfo,
    ClientState,
    Compaction,
    HistoryCompactedError,
    InstanceSummary,
    JobInfo,
    JobStateError,
    JobStatus,
    RejectedMutation,
    StoredRow,
)
from .sqlite import SqliteInstanceStore, instance_path
from .sqlite_backend import SqliteBackend

__all__ = [
    "CatchUp",
    "ClaimedJob",
    "ClientInfo",
    "ClientState",
    "CommittedReader",
    "Compaction",
    "HistoryCompactedError",
    "InstanceInspector",
    "InstanceStore",
    "InstanceSummary",
    "JobInfo",
    "JobStateError",
    "JobStatus",
    "RejectedMutation",
    "RowReader",
    "SqliteBackend",
    "SqliteInstanceStore",
    "StorageBackend",
    "StoredRow",
    "WriterTx",
    "instance_path",
    "validate_instance_id",
]
