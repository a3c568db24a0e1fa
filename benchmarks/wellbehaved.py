"""Well-behaved clients that keep syncing while the fuzzer and the soak attack the server.

Real ``synced_store.client.connect`` clients of ``appdefs.backend``. Each records every
connection status change and every close code it received (:class:`RecordingConnector`), so
"never disconnected" is checked, not assumed.

* :class:`GoodWriter` writes unique rows at a steady rate (``setValue`` of a counter and
  ``addItem`` in turn, under keys starting with ``~good-``) and remembers each write the
  server confirmed; :func:`verify` reads them back through a fresh client.
* :class:`LatencyPair` is the soak's measure: one client writes a row at a fixed rate, the
  other observes the table through a subscription; the latency of a write is from the writer's
  ``mutate`` call to the observer's callback that first shows the row (as benchmarks/e2e.py
  measures write → visible).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import appdefs  # noqa: E402
from synced_store.client import SyncedStoreClient, connect  # noqa: E402
from synced_store.client.transport import (  # noqa: E402
    Connection,
    ConnectionLost,
    WebSocketConnector,
    sync_url,
)

from .fuzz_strategies import GOOD_PREFIX  # noqa: E402

__all__ = ["GoodWriter", "LatencyPair", "RecordingConnector", "verify"]


@dataclass
class Disconnect:
    at: float  # time.time()
    code: int
    reason: str


class _RecordingConnection:
    def __init__(self, inner: Connection, log: list[Disconnect]) -> None:
        self._inner = inner
        self._log = log

    async def send(self, text: str) -> None:
        try:
            await self._inner.send(text)
        except ConnectionLost as exc:
            self._note(exc)
            raise

    async def recv(self) -> str:
        try:
            return await self._inner.recv()
        except ConnectionLost as exc:
            self._note(exc)
            raise

    def _note(self, exc: ConnectionLost) -> None:
        if not self._log or time.time() - self._log[-1].at > 0.5:
            self._log.append(Disconnect(time.time(), exc.code, exc.reason))

    async def close(self) -> None:
        await self._inner.close()


class RecordingConnector(WebSocketConnector):
    """The real connector; every close a connection ends with is appended to ``closes``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.closes: list[Disconnect] = []
        self.connects = 0

    async def connect(self) -> Connection:
        conn = await super().connect()
        self.connects += 1
        return _RecordingConnection(conn, self.closes)


class _Watched:
    """A client and its connection history."""

    def __init__(self, name: str, instance: str) -> None:
        self.name = name
        self.instance = instance
        self.store: SyncedStoreClient | None = None
        self.connector: RecordingConnector | None = None
        self.statuses: list[tuple[float, str]] = []
        self.ended: str | None = None
        self._closing_at: float | None = None

    async def _open(self, url: str, token: str) -> SyncedStoreClient:
        self.connector = RecordingConnector(sync_url(url, self.instance))
        store = await connect(
            url, appdefs.backend, instance_id=self.instance, token=token, connector=self.connector
        )
        store.on_connection_status(lambda s: self.statuses.append((time.time(), s)))
        store.on_ended(self._on_end)
        await store.wait_for_server_data(60)
        return store

    def _on_end(self, reason: str) -> None:
        self.ended = reason

    @property
    def disconnects(self) -> list[Disconnect]:
        """Connections the client lost while it was meant to be connected."""
        if self.connector is None:
            return []
        until = self._closing_at
        return [d for d in self.connector.closes if until is None or d.at < until]

    async def close(self) -> None:
        self._closing_at = time.time()
        if self.store is not None:
            await self.store.close()


class GoodWriter(_Watched):
    """Writes ``rate`` unique rows a second; ``confirmed`` holds what the server confirmed."""

    def __init__(self, name: str, instance: str, rate: float = 20.0) -> None:
        super().__init__(name, instance)
        self.rate = rate
        self.issued = 0
        self.failed: list[str] = []
        #: ``{("counters" | "items", key): expected value}``
        self.confirmed: dict[tuple[str, str], Any] = {}
        self._pending: set[asyncio.Future[None]] = set()

    async def start(self, url: str) -> None:
        self.store = await self._open(url, GOOD_PREFIX + self.name)

    def _expected(self, i: int) -> tuple[str, str, str, dict[str, Any], Any]:
        key = f"{GOOD_PREFIX}{self.name}-{i:07d}"
        if i % 2 == 0:
            return "counters", "setValue", key, {"key": key, "value": i}, {"value": i}
        text = f"{self.name}:{i}:" + hashlib.sha256(key.encode()).hexdigest()
        return "items", "addItem", key, {"id": key, "text": text}, {"id": key, "text": text}

    async def run(self, stop: asyncio.Event) -> None:
        """Write on a fixed schedule until ``stop`` is set."""
        assert self.store is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        while not stop.is_set():
            due = start + i / self.rate
            delay = due - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            table, mutator, key, args, value = self._expected(i)
            res = await getattr(self.store.mutate, mutator)(args)
            self.issued += 1
            fut = res.confirmed
            self._pending.add(fut)
            fut.add_done_callback(lambda f, t=table, k=key, v=value: self._done(f, t, k, v))
            i += 1

    def _done(self, fut: asyncio.Future[None], table: str, key: str, value: Any) -> None:
        self._pending.discard(fut)
        if fut.cancelled() or fut.exception() is not None:
            self.failed.append(key)
        else:
            self.confirmed[(table, key)] = value

    async def drain(self, timeout: float = 60.0) -> int:
        """Wait (bounded) for every write to be confirmed or failed; returns how many are
        still unconfirmed."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._pending:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        return len(self._pending)

    async def check_local(self) -> list[str]:
        """Confirmed writes missing or wrong in the writer's own view."""
        assert self.store is not None
        return await _missing(self.store, self.confirmed)


async def _missing(store: SyncedStoreClient, expected: dict[tuple[str, str], Any]) -> list[str]:
    async def read(ctx: Any) -> dict[tuple[str, str], Any]:
        out: dict[tuple[str, str], Any] = {}
        for table in ("counters", "items"):
            for k, v in await ctx.table(table).scan(prefix=GOOD_PREFIX).entries():
                out[(table, k.item_key)] = v
        return out

    have = await store.query(read)
    return [f"{t}/{k}" for (t, k), v in expected.items() if have.get((t, k)) != v]


async def verify(url: str, instance: str, expected: dict[tuple[str, str], Any]) -> list[str]:
    """Connect a fresh client to ``instance`` and return the expected rows it does not see
    (missing or with another value)."""
    store = await connect(url, appdefs.backend, instance_id=instance, token="~verifier")
    try:
        await store.wait_for_server_data(120)
        return await _missing(store, expected)
    finally:
        await store.close()


@dataclass
class LatencySample:
    i: int
    sent: float  # time.time() of the mutate call
    latency_ms: float | None = None  # None: never seen
    confirmed_ms: float | None = None


@dataclass
class LatencyPair:
    """A writer and an observer on one instance (see the module doc)."""

    instance: str
    rate: float = 20.0
    writer: _Watched = field(init=False)
    observer: _Watched = field(init=False)
    samples: list[LatencySample] = field(default_factory=list)
    #: Loop lateness of the writer's schedule (ms): the load generator's own delays.
    schedule_lag_ms: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.writer = _Watched("writer", self.instance)
        self.observer = _Watched("observer", self.instance)
        self._t0: dict[str, tuple[float, LatencySample]] = {}

    async def start(self, url: str) -> None:
        self.writer.store = await self.writer._open(url, GOOD_PREFIX + "writer")
        self.observer.store = await self.observer._open(url, GOOD_PREFIX + "observer")
        self.observer.store.subscribe_to_table("counters", self._seen)

    def _seen(self, entries: Any, changes: dict[str, list[str]]) -> None:
        now = time.perf_counter()
        for key in changes.get("added", ()):
            hit = self._t0.pop(key, None)
            if hit is not None:
                hit[1].latency_ms = (now - hit[0]) * 1000

    async def run(self, stop: asyncio.Event) -> None:
        """Write ``rate`` rows a second on a fixed schedule until ``stop`` is set."""
        store = self.writer.store
        assert store is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        while not stop.is_set():
            due = start + i / self.rate
            delay = due - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            else:
                self.schedule_lag_ms.append(-delay * 1000)
            key = f"{GOOD_PREFIX}lat-{i:07d}"
            sample = LatencySample(i, time.time())
            self.samples.append(sample)
            t0 = time.perf_counter()
            self._t0[key] = (t0, sample)
            res = await store.mutate.setValue({"key": key, "value": i})
            res.confirmed.add_done_callback(lambda f, s=sample, t0=t0: self._confirmed(f, s, t0))
            i += 1

    @staticmethod
    def _confirmed(fut: asyncio.Future[None], sample: LatencySample, t0: float) -> None:
        if not fut.cancelled() and fut.exception() is None:
            sample.confirmed_ms = (time.perf_counter() - t0) * 1000

    async def settle(self, timeout: float = 10.0) -> None:
        """Give the last writes (bounded) time to become visible."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._t0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.writer.close()
        await self.observer.close()
