"""The in-process connector: a client of the app it runs in, through the real sync endpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from appdefs import backend, get_counter
from synced_store.client import connect
from synced_store.client.asgi_transport import AsgiConnector
from synced_store.errors import ConnectionEndedError
from synced_store.server.auth import dev_authenticate
from synced_store.testing import create_test_harness, wait_for

pytestmark = pytest.mark.e2e


async def test_a_client_of_the_app_in_process(tmp_path: Path) -> None:
    async with await create_test_harness(
        backend, data_dir=tmp_path, authenticate=dev_authenticate
    ) as h:
        remote = await h.create_client("bob")
        local = await connect(
            "ws://in-process",
            backend,
            instance_id=h.instance_id,
            token="alice",
            connector=AsgiConnector(h.app, f"/sync/{h.instance_id}"),
        )
        try:
            await local.wait_for_server_data(10)
            res = await local.mutate.increment({"key": "c"})
            await res.confirmed
            assert await wait_for(remote, lambda ctx: get_counter(ctx, "c"), lambda v: v == 1)
            await remote.mutate.increment({"key": "c", "amount": 2})
            assert await wait_for(local, lambda ctx: get_counter(ctx, "c"), lambda v: v == 3)
        finally:
            await local.close()

        h.allowed_errors.append("session ended by the server (auth_failed)")
        refused = await connect(
            "ws://in-process",
            backend,
            instance_id=h.instance_id,
            token="bad/token",
            connector=AsgiConnector(h.app, f"/sync/{h.instance_id}"),
        )
        try:
            with pytest.raises(ConnectionEndedError, match="auth_failed"):
                await refused.wait_for_server_data(10)
        finally:
            await refused.close()
