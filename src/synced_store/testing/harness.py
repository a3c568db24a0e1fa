"""``create_test_harness``: a real server on 127.0.0.1 plus clients, in one process."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from ..client.store import SyncedStoreClient, connect
from ..client.transport import WebSocketConnector, sync_url
from ..errors import SyncedStoreError
from ..schema import BackendConfig
from ..server.app import create_app
from ..server.uvicorn_setup import uvicorn_config
from .seeding import Rows, seed_instance
from .transport import ControlledConnector, ControlledTransport

__all__ = ["TestHarness", "create_test_harness"]


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class TestHarness:
    """A server (uvicorn on a free 127.0.0.1 port, SQLite in a temp dir) and its clients."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        backend: BackendConfig,
        *,
        data_dir: str | Path | None = None,
        instance_id: str = "test",
        app_options: dict[str, Any] | None = None,
        services: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        #: The platform services the server calls (``ctx.platform.call``): the backend's,
        #: with ``services`` over them; :meth:`set_service` changes one while running.
        self.services: dict[str, Callable[..., Any]] = {**backend.services, **(services or {})}
        self.backend = dataclasses.replace(backend, services=self.services)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="synced-store-test-"))
        self.instance_id = instance_id
        self.app_options = dict(app_options or {})
        self.app_options.setdefault("authenticate", lambda token: token or None)
        self.port = 0
        self.clients: list[SyncedStoreClient] = []
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._errors = _ErrorLog()
        self.allowed_errors: list[str] = []

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def app(self) -> Any:
        """The running ASGI app (its ``state.registry`` holds the instances)."""
        assert self._server is not None
        return self._server.config.app

    async def start_server(self) -> None:
        """Start (or restart) the server on the same port and data directory."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        app = create_app(self.backend, data_dir=self.data_dir, **self.app_options)
        # The production configuration (limits, WebSocket implementation), as `serve` runs it.
        config = uvicorn_config(
            app,
            self.app_options.get("limits"),
            log_level="warning",
            lifespan="on",
            # A stalled connection must not hold a restart forever: close it after 2 s.
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        started = asyncio.Event()
        server = self._server

        async def serve() -> None:
            await server.serve(sockets=[sock])

        self._task = asyncio.get_running_loop().create_task(serve())
        # uvicorn has no readiness callback; its `started` flag flips during startup.
        while not server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.005)
        started.set()

    async def stop_server(self) -> None:
        """Stop the server gracefully (clients see their connection drop and retry)."""
        if self._server is None:
            return
        self._server.should_exit = True
        assert self._task is not None
        await self._task
        if self._sock is not None:
            self._sock.close()
        self._server = None

    async def restart_server(self) -> None:
        """Stop and start again on the same port and data (state comes back from SQLite)."""
        await self.stop_server()
        await self.start_server()

    async def _client(
        self,
        user_id: str,
        instance_id: str | None,
        persist_path: str | Path | None,
        connector: ControlledConnector | None,
        wait: bool,
        timeout: float,
    ) -> SyncedStoreClient:
        client = await connect(
            self.url,
            self.backend,
            instance_id=instance_id or self.instance_id,
            token=user_id,
            user_id=user_id,
            persist_path=persist_path,
            connector=connector,
            reconnect_delay=(0.005, 0.05),  # tests reconnect at once after a simulated cut
        )
        self.clients.append(client)
        if wait:
            await client.wait_for_server_data(timeout)
        return client

    async def create_client(
        self,
        user_id: str = "user",
        *,
        instance_id: str | None = None,
        persist_path: str | Path | None = None,
        wait: bool = True,
        timeout: float = 10.0,
    ) -> SyncedStoreClient:
        """A client of ``instance_id`` acting as ``user_id``, synced (unless ``wait=False``)."""
        return await self._client(user_id, instance_id, persist_path, None, wait, timeout)

    async def create_controlled_client(
        self,
        user_id: str = "user",
        *,
        instance_id: str | None = None,
        persist_path: str | Path | None = None,
        wait: bool = True,
        timeout: float = 10.0,
    ) -> tuple[SyncedStoreClient, ControlledTransport]:
        """A client whose network the test controls; returns ``(client, transport)``."""
        connector = ControlledConnector(
            WebSocketConnector(sync_url(self.url, instance_id or self.instance_id))
        )
        client = await self._client(user_id, instance_id, persist_path, connector, wait, timeout)
        client.transport = connector.transport  # type: ignore[attr-defined]
        return client, connector.transport

    def set_service(self, name: str, service: Callable[..., Any]) -> None:
        """Replace (or add) platform service ``name``, for instance the ``bot.stream`` bot
        (:func:`~synced_store.testing.text_response`); calls from now on use it."""
        self.services[name] = service

    async def seed_instance(
        self,
        rows: Rows | None = None,
        *,
        instance_id: str | None = None,
        private: Mapping[str, Rows] | None = None,
        server_only: Rows | None = None,
        schema_version: int | None = None,
    ) -> int:
        """:func:`~synced_store.testing.seed_instance` into this server's data directory.
        The instance must not be open yet: seed before a client connects to it."""
        iid = instance_id or self.instance_id
        if self._server is not None and iid in self.app.state.registry.instances:
            raise SyncedStoreError(f"instance {iid} is open; seed it before a client connects")
        return await seed_instance(
            self.backend,
            self.data_dir,
            iid,
            rows=rows,
            private=private,
            server_only=server_only,
            schema_version=schema_version,
        )

    @property
    def error_logs(self) -> list[str]:
        """ERROR log lines from synced-store since the harness started."""
        return [r.getMessage() for r in self._errors.records]

    async def dispose(self, *, check_errors: bool = True) -> None:
        """Close clients and the server; with ``check_errors``, fail if synced-store logged an
        error not matched by :attr:`allowed_errors`."""
        for c in self.clients:
            await c.close()
        await self.stop_server()
        logging.getLogger("synced_store").removeHandler(self._errors)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if check_errors:
            bad = [m for m in self.error_logs if not any(a in m for a in self.allowed_errors)]
            if bad:
                raise AssertionError(f"unexpected synced-store errors: {bad}")

    async def __aenter__(self) -> TestHarness:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        await self.dispose(check_errors=exc_type is None)


async def create_test_harness(
    backend: BackendConfig,
    *,
    data_dir: str | Path | None = None,
    instance_id: str = "test",
    services: Mapping[str, Callable[..., Any]] | None = None,
    bot: Callable[..., Any] | None = None,
    **app_options: Any,
) -> TestHarness:
    """Start a harness: a real server for ``backend``. Use ``async with`` or ``dispose()``.

    ``services`` replace or add platform services; ``bot`` is the ``bot.stream`` service
    (for instance :func:`~synced_store.testing.text_response`). Other keyword arguments go to
    :func:`~synced_store.server.create_app` (``mcp=True``, ``authorize=...``, ...).
    """
    extra = {**(services or {}), **({"bot.stream": bot} if bot is not None else {})}
    h = TestHarness(
        backend,
        data_dir=data_dir,
        instance_id=instance_id,
        app_options=app_options,
        services=extra,
    )
    logging.getLogger("synced_store").addHandler(h._errors)
    await h.start_server()
    return h
