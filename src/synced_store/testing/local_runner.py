"""``create_local_runner``: run a backend's mutators and actions in memory, with no server.

    runner = create_local_runner(backend, platform=create_mock_platform_caller(
        {"bot.stream": text_response("Hi there")}))
    await runner.mutate("sendMessage", {...}, user_id="alice")
    await runner.run_enqueued()            # the actions the mutations enqueued
    assert runner.rows("messages")["b1"]["status"] == "complete"

Everything runs as the server runs it (``ctx.is_server`` is true, validation on every ``set``,
``ctx.platform`` is the given platform), on an in-memory store: a mutation that raises rolls
back alone, and its enqueued actions are dropped with it. Errors are raised as the handler
raised them (the server would wrap an action's in :class:`~synced_store.errors.ActionError`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

from ..core.context import MutationContext, ReadContext, json_input
from ..core.keys import PUBLIC, SERVER_ONLY, check_depth, private_ns
from ..core.store import MemoryStore
from ..schema import BackendConfig
from ..server.search import search_rows
from ..types import EntryKey, RowKey
from .platform import MockPlatformCaller
from .search import MemorySearchReader
from .seeding import Rows

__all__ = ["LocalRunner", "create_local_runner"]


class _MemoryTx:
    """The core ``Tx`` over a :class:`MemoryStore` (values copied on read)."""

    copy_on_read = True
    is_async: Literal[False] = False

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def read(self, key: RowKey) -> tuple[str, Any] | None:
        return self.store.get(key)

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        return self.store.iterate(ns, table, start, exclusive=exclusive, reverse=reverse)

    def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        self.store.put(key, sort_key, value)

    def remove(self, key: RowKey) -> None:
        self.store.delete(key)

    def note_point(self, key: RowKey) -> None:
        pass

    def note_range(self, ns: str, table: str, low: EntryKey | None, high: EntryKey | None) -> None:
        pass


class LocalActionContext(ReadContext):
    """An action's ``ctx`` in the local runner: read-only tables, ``mutate``, ``platform``."""

    def __init__(self, runner: LocalRunner, user_id: str, action: str, job_id: int | None) -> None:
        super().__init__(runner.backend.schema, _MemoryTx(runner.store), user_id, is_server=True)
        self.runner = runner
        self.platform = runner.platform
        self.instance_id = runner.instance_id
        self.action = action
        self.job_id = job_id
        self.source: dict[str, Any] = {"type": "action", "user_id": user_id, "action": action}

    async def mutate(self, name: str, input: Any) -> None:
        """Run mutator ``name`` as this action's user (committed at once)."""
        await self.runner.mutate(name, input, user_id=self.user_id, source=self.source)

    async def search(self, table: str, query: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """``ctx.search`` as on the server (server/search.py), over the runner's rows."""
        reader = MemorySearchReader(self.runner.store, self.schema)
        return await search_rows(reader, self.schema, self.user_id, table, query, limit)


class LocalRunner:
    """A backend run in memory (see the module doc)."""

    def __init__(
        self,
        backend: BackendConfig,
        *,
        platform: Any = None,
        user_id: str = "user",
        instance_id: str = "local",
    ) -> None:
        self.backend = backend
        #: ``ctx.platform``: the given one, else the backend's own services (recorded).
        self.platform: Any = (
            platform if platform is not None else MockPlatformCaller(backend.services)
        )
        self.user_id = user_id
        self.instance_id = instance_id
        self.store = MemoryStore()
        #: Actions enqueued by committed mutations and not run yet: ``(name, input, user_id)``.
        self.enqueued: list[tuple[str, Any, str]] = []
        #: Every committed mutation: ``(name, input JSON, user_id)``.
        self.mutations: list[tuple[str, Any, str]] = []
        self._jobs = 0

    # -- rows --------------------------------------------------------------------------------

    def load(
        self,
        rows: Rows | None = None,
        *,
        private: dict[str, Rows] | None = None,
        server_only: Rows | None = None,
    ) -> None:
        """Put rows straight into the store (validated against the table models), like
        :func:`~synced_store.testing.seed_instance` does for a server's instance."""
        tiers = [(PUBLIC, rows or {}), (SERVER_ONLY, server_only or {})]
        tiers += [(private_ns(u), r) for u, r in (private or {}).items()]
        for ns, table_rows in tiers:
            for table, items in table_rows.items():
                tdef = self.backend.schema.table_def(table)
                for key, value in items.items():
                    sk, ik = (
                        (key.sort_key, key.item_key) if isinstance(key, EntryKey) else ("", key)
                    )
                    check_depth(value)
                    clean = tdef.validate_value(table, ik, value)
                    self.store.put(RowKey(ns, table, ik), sk, clean)

    def rows(
        self, table: str, *, private_of: str | None = None, server_only: bool = False
    ) -> dict[str, Any]:
        """``{item_key: value}`` of a table (public rows, a user's private ones, or the
        server-only tier), in scan order."""
        ns = SERVER_ONLY if server_only else (private_ns(private_of) if private_of else PUBLIC)
        return {
            ek.item_key: v
            for ek, v in self.store.iterate(ns, table, None, exclusive=False, reverse=False)
        }

    def get(self, table: str, key: str) -> Any:
        """A public row's value, or None."""
        row = self.store.get(RowKey(PUBLIC, table, key))
        return None if row is None else row[1]

    async def query(self, fn: Callable[[ReadContext], Any], *, user_id: str | None = None) -> Any:
        """Run a query (``fn(ctx)``, sync or async) on the current rows."""
        ctx = ReadContext(
            self.backend.schema, _MemoryTx(self.store), user_id or self.user_id, is_server=True
        )
        result = fn(ctx)
        if hasattr(result, "__await__"):
            result = await result
        return result

    # -- running -----------------------------------------------------------------------------

    async def mutate(
        self,
        name: str,
        input: Any = None,
        *,
        user_id: str | None = None,
        source: dict[str, Any] | None = None,
    ) -> None:
        """Run mutator ``name`` as the server would; raise (and change nothing) if it fails."""
        uid = user_id or self.user_id
        mdef = self.backend.schema.mutator(name)
        wire = json_input(mdef.input_encode, input, f"input for mutator {name!r}")
        handler = self.backend.mutators[name]
        ctx = MutationContext(
            self.backend.schema,
            _MemoryTx(self.store),
            uid,
            is_server=True,
            source=source or {"type": "user", "user_id": uid},
            platform=self.platform,
        )
        snapshot = list(self.store.rows())
        try:
            await handler(ctx, mdef.parse_input(wire))
        except BaseException:
            self.store.clear()
            self.store.load(snapshot)
            raise
        self.mutations.append((name, wire, uid))
        self.enqueued.extend((n, args, uid) for n, args in ctx.enqueued)

    async def action(
        self, name: str, input: Any = None, *, user_id: str | None = None, job_id: int | None = None
    ) -> Any:
        """Run action ``name`` (as a client's call; with ``job_id``, as a queued job) and
        return its validated output JSON."""
        uid = user_id or self.user_id
        adef = self.backend.schema.action(name)
        value = adef.parse_input(json_input(adef.input_encode, input, f"input for action {name!r}"))
        ctx = LocalActionContext(self, uid, name, job_id)
        out = await self.backend.actions[name](ctx, value)
        return adef.output_to_json(out)

    async def run_enqueued(self) -> list[Any]:
        """Run the enqueued actions in order, as queued jobs of the users whose mutations
        enqueued them (including any they enqueue in turn); returns their outputs."""
        outputs = []
        while self.enqueued:
            name, args, uid = self.enqueued.pop(0)
            self._jobs += 1
            outputs.append(await self.action(name, args, user_id=uid, job_id=self._jobs))
        return outputs


def create_local_runner(
    backend: BackendConfig,
    *,
    platform: MockPlatformCaller | Any = None,
    user_id: str = "user",
    rows: Rows | None = None,
) -> LocalRunner:
    """A :class:`LocalRunner` for ``backend`` with ``platform`` (default: the backend's own
    services, recorded) and optional starting ``rows``."""
    runner = LocalRunner(backend, platform=platform, user_id=user_id)
    if rows:
        runner.load(rows)
    return runner
