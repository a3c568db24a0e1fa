"""``define_client_config``: a client that imports only the schema and the mutators runs
against a real server, and never imports the server's code (checked in a subprocess)."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import pytest

from synced_store import ClientConfig, SchemaError, define_client_config
from synced_store.testing import create_test_harness, wait_for_key_match

from .split_app.backend import backend
from .split_app.shared import MUTATORS, schema

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))

CLIENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from tests.client.split_app.client import client_config
    from synced_store.client import connect

    async def main(url):
        store = await connect(url, client_config, instance_id="split", token="kim")
        res = await store.mutate.addItem(id="a", text="from the client")
        await asyncio.wait_for(res.confirmed, 10)

        async def welcome(ctx):
            return await ctx.table("items").get("welcome")

        await store.wait_for_server_data(10)
        print("welcome:", (await store.query(welcome))["text"])
        await store.close()

    asyncio.run(main(sys.argv[1]))
    server_side = sorted(
        m for m in sys.modules
        if m.startswith(("synced_store.server", "synced_store.testing", "synced_store.cli."))
        or m in ("synced_store.cli", "tests.client.split_app.backend", "starlette", "uvicorn")
    )
    print("server modules:", server_side)
    """
)


def test_define_client_config_checks_the_mutators() -> None:
    config = define_client_config(schema=schema, mutators=MUTATORS)
    assert isinstance(config, ClientConfig)
    assert not hasattr(config, "actions")
    with pytest.raises(SchemaError, match="no handler"):
        define_client_config(schema=schema, mutators={})

    def not_async(ctx: object, input: object) -> None: ...

    with pytest.raises(SchemaError, match="async"):
        define_client_config(schema=schema, mutators={"addItem": not_async})  # type: ignore[dict-item]


async def test_a_client_with_only_the_client_config_never_imports_server_code(
    tmp_path: Path,
) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path, instance_id="split") as h:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT_SCRIPT,
            h.url,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        text = out.decode()
        assert "welcome: hello" in text  # on_init ran on the server
        assert "server modules: []" in text, text
        watcher = await h.create_client("watcher", instance_id="split")
        await wait_for_key_match(
            watcher,
            table="items",
            key="a",
            match=lambda v: v["text"] == "from the client",
            timeout=TIMEOUT,
        )
        # The action (server code) ran for the client's mutation.
        await wait_for_key_match(
            watcher,
            table="$user_info",
            key="kim",
            match=lambda v: v["display_name"] == "FROM THE CLIENT",
            timeout=TIMEOUT,
        )
