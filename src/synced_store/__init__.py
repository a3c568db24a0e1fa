"""synced-store: a local-first sync engine in Python.

Layout (dependencies point up the list):

- ``protocol/`` wire messages, codec, close codes: pure data.
- ``core/`` the sans-I/O engine: contexts and table handles, rebase, subscriptions.
- ``storage/`` the server's per-instance databases.
- ``server/`` the ASGI app: sync endpoint, one writer per instance, fan-out, actions.
- ``client/`` the asyncio client over the core engine (its local cache: storage/client_cache.py).
- ``testing/`` the public test harness; ``web/`` the browser client (JS shell, Pyodide);
  ``cli/`` the command line; ``bot/`` LLM services an app can plug in.

The example apps (``examples/`` in a clone, ``synced_store_examples`` installed) build on this
package; nothing here imports them.

This module re-exports the names apps use to declare their schema and handlers.
"""

from .app_config import ClientConfig, define_client_config
from .errors import (
    ActionError,
    ClientClosedError,
    ConnectionEndedError,
    ConnectionLost,
    InstanceUnavailableError,
    KeyTooLargeError,
    MutationFailedError,
    MutatorError,
    OfflineError,
    OverloadedError,
    PermissionDeniedError,
    ProtocolError,
    QuotaExceededError,
    SchemaError,
    StorageError,
    SyncedStoreError,
    UnknownNameError,
    ValidationError,
    ValueTooDeepError,
    ValueTooLargeError,
)
from .schema import (
    BackendConfig,
    Schema,
    define_backend_config,
    define_migration,
    define_schema,
    item,
    singleton_table,
    table,
)
from .types import EntryKey, JSONValue

__version__ = "0.1.0"

__all__ = [
    "ActionError",
    "BackendConfig",
    "ClientClosedError",
    "ClientConfig",
    "ConnectionEndedError",
    "ConnectionLost",
    "EntryKey",
    "InstanceUnavailableError",
    "JSONValue",
    "KeyTooLargeError",
    "MutationFailedError",
    "MutatorError",
    "OfflineError",
    "OverloadedError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "Schema",
    "SchemaError",
    "StorageError",
    "SyncedStoreError",
    "UnknownNameError",
    "ValidationError",
    "ValueTooDeepError",
    "ValueTooLargeError",
    "__version__",
    "define_backend_config",
    "define_client_config",
    "define_migration",
    "define_schema",
    "item",
    "singleton_table",
    "table",
]
