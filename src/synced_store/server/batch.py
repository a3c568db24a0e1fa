"""What an instance's writer works on: queued work items, and the transaction mutators see.

Split from instance.py, which runs them: :class:`Push` (a client's mutations), :class:`Direct`
(a mutation from an action or the CLI), :class:`Op` (a storage operation such as job
bookkeeping), and :class:`ServerTx`, the core ``AsyncTx`` over the writer's open
:class:`~synced_store.storage.base.WriterTx`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from ..protocol.messages import Error, Mutation, MutationErrorReport, PushResponse
from ..storage.base import WriterTx
from ..types import RowKey
from .fanout import Change
from .session import Session

__all__ = ["Direct", "Op", "Push", "ServerTx", "Written", "call_in_tx"]


class ServerTx:
    """Core ``AsyncTx`` over the writer's open transaction; records the rows it changes."""

    copy_on_read = False
    is_async: Literal[True] = True

    def __init__(self, tx: WriterTx, version: int) -> None:
        self._tx = tx
        self._version = version
        self.changes: dict[RowKey, Change] = {}
        # Reads go straight to the transaction.
        self.read = tx.read
        self.scan = tx.scan

    async def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        await self._tx.write(key, sort_key, encoded, self._version)
        self.changes[key] = (sort_key, value, encoded, 0)  # the set op is built after commit

    async def remove(self, key: RowKey) -> None:
        if await self._tx.remove(key, self._version) or key in self.changes:
            self.changes[key] = None


async def call_in_tx(fn: Callable[[WriterTx], Any], tx: WriterTx) -> Any:
    """``fn(tx)``, awaited if it returned an awaitable (writer operations may be either)."""
    res = fn(tx)
    if inspect.isawaitable(res):
        res = await res
    return res


@dataclass
class Push:
    """A client's pushed mutations, in order."""

    session: Session
    mutations: list[Mutation]


@dataclass
class Op:
    """A storage operation run inside the writer's transaction (job bookkeeping)."""

    fn: Any
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class Direct:
    """A mutation from an action (``ctx.mutate``) or the CLI: no client, awaited by the caller."""

    user_id: str
    name: str
    args: Any
    source: dict[str, Any]
    system: Any = None
    after: Any = None
    #: A data migration from this schema version: skipped if the stored data is no longer at
    #: it (another process migrated it first).
    from_schema: int | None = None
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: What a batch wrote: its version, changed rows, new ``last_mutation_id`` and rejected
#: mutations per client, results of direct items, replies to send, jobs enqueued.
Written: TypeAlias = tuple[
    int,
    dict[RowKey, Change],
    dict[str, int],
    dict[str, list[MutationErrorReport]],
    list[tuple[Direct | Op, Any]],
    list[tuple[Session, Error | PushResponse]],
    int,
]
