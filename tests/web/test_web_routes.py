"""The web routes and the page's Python bridge, without a browser (always run)."""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import synced_store.web
from synced_store.web import IMMUTABLE, python_bundle, routes
from synced_store.web.build import load_build

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = (
    "synced_store.server",
    "synced_store.client",
    "synced_store.storage",
    "starlette",
    "orjson",
    "uvicorn",
    "websockets",
    "sqlite3",
    "asyncio",
    "examples.chat.actions",
    "examples.chat.app",
    "synced_store.bot",
)


@pytest.fixture(scope="module")
def chat_backend() -> Any:
    from examples.chat.app import backend

    return backend


def test_bundle_ships_only_what_runs_in_the_browser(chat_backend: Any) -> None:
    bundle = python_bundle(chat_backend, "examples.chat")
    files = set(bundle.files)
    assert {
        "examples/chat/mutators.py",
        "examples/chat/schema.py",
        "_synced_store_bridge.py",
        "synced_store/core/client_engine.py",
        "synced_store/schema.py",
    } <= files
    assert "examples/chat/actions.py" not in files
    assert "examples/chat/app.py" not in files
    assert bundle.files["examples/chat/__init__.py"] == ""  # a stub, not the real package
    assert not any(
        f.startswith(
            (
                "synced_store/server",
                "synced_store/client",
                "synced_store/storage",
                "synced_store/web",
            )
        )
        for f in files
    )
    assert bundle.spec["schema"] == ["examples.chat.schema", "chat_schema"]
    # The demo's rooms list themselves in the lobby from on_init (server-only: not shipped).
    assert bundle.spec["mutators"]["addRoom"] == ["examples.chat.lobby", "add_room"]
    for path, text in bundle.files.items():
        for node in ast.walk(ast.parse(text, path)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path} imports {name}"


def _in_thread(fn: Callable[[], Awaitable[None]]) -> None:
    """Run an async check on a fresh loop in another thread (independent of any loop here)."""

    async def main() -> None:
        await fn()

    with ThreadPoolExecutor(1) as ex:
        ex.submit(asyncio.run, main()).result()


def _client(backend: Any) -> httpx.AsyncClient:
    app = Starlette(routes=routes("examples.chat", backend=backend))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_routes_serve_the_page_with_caching_headers(chat_backend: Any) -> None:
    _in_thread(lambda: _check_page(chat_backend))


async def _check_page(chat_backend: Any) -> None:
    async with _client(chat_backend) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-cache"
        again = await client.get("/", headers={"if-none-match": page.headers["etag"]})
        assert again.status_code == 304
        raw = page.text.split('id="synced-store-config">')[1].split("</script>")[0]
        config = json.loads(raw)
        assert config["schemaVersion"] == 1
        assert "sendMessage" in config["mutators"]
        js = await client.get("/_ss/static/synced-store.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert js.headers["cache-control"] == "no-cache"
        css = await client.get("/_ss/app/chat.css")
        assert css.headers["content-type"].startswith("text/css")
        if config["pyodide"] is not None:
            bundle = await client.get(config["pyodide"]["python"]["bundle"])
            assert bundle.headers["cache-control"] == IMMUTABLE
            assert "examples/chat/mutators.py" in bundle.json()["files"]
            assert (await client.get("/_ss/py/0000000000000000.json")).status_code == 404


def test_the_app_ships_its_page_and_the_library_only_the_shell(chat_backend: Any) -> None:
    _in_thread(lambda: _check_app_page(chat_backend))


async def _check_app_page(chat_backend: Any) -> None:
    shell = Path(synced_store.web.__file__).parent / "static"
    assert (shell / "synced-store.js").is_file()
    assert not [f.name for f in shell.iterdir() if "chat" in f.name or f.suffix == ".html"]
    async with _client(chat_backend) as client:
        page = (await client.get("/")).text
        assert 'id="composer"' in page  # examples/chat/static/index.html, found by convention
        assert '<script type="module" src="/_ss/app/chat.js?v=' in page
        chat_js = await client.get("/_ss/app/chat.js")
        assert chat_js.status_code == 200
        assert chat_js.headers["cache-control"] == "no-cache"
        assert "createStore" in chat_js.text
        assert (await client.get("/_ss/static/chat.js")).status_code == 404


def test_an_app_without_a_page_gets_a_placeholder_or_its_static_dir(tmp_path: Path) -> None:
    _in_thread(lambda: _check_placeholder_and_static_dir(tmp_path))


async def _check_placeholder_and_static_dir(tmp_path: Path) -> None:
    from tests.web.depth_app import backend

    def client(**kwargs: Any) -> httpx.AsyncClient:
        app = Starlette(routes=routes("tests.web.depth_app", backend=backend, **kwargs))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

    async with client(title="depth") as http:  # tests/web has no static/ folder
        page = await http.get("/")
        assert page.status_code == 200
        assert "This app ships no page" in page.text
        raw = page.text.split('id="synced-store-config">')[1].split("</script>")[0]
        assert json.loads(raw)["mutators"] == ["nest", "put"]
        assert (await http.get("/_ss/app/index.html")).status_code == 404
    (tmp_path / "index.html").write_text("<title>{{TITLE}}</title><script src='a.js?v={{V}}'>")
    (tmp_path / "a.js").write_text("export const a = 1;")
    async with client(static_dir=tmp_path, title="mine") as http:
        page = await http.get("/")
        assert page.text.startswith("<title>mine</title><script src='a.js?v=")
        assert "{{V}}" not in page.text
        js = await http.get("/_ss/app/a.js")
        assert js.text == "export const a = 1;"
        assert js.headers["content-type"].startswith("text/javascript")


@pytest.mark.skipif(load_build() is None, reason="no web build (scripts/build-web)")
def test_runtime_files_have_mime_types_and_long_caching(chat_backend: Any) -> None:
    _in_thread(lambda: _check_runtime_files(chat_backend))


async def _check_runtime_files(chat_backend: Any) -> None:
    async with _client(chat_backend) as client:
        config = json.loads(
            (await client.get("/")).text.split('id="synced-store-config">')[1].split("</script>")[0]
        )
        base = config["pyodide"]["indexURL"]
        wasm = await client.head(base + "pyodide.asm.wasm")
        assert wasm.headers["content-type"] == "application/wasm"
        assert wasm.headers["cache-control"] == IMMUTABLE
        mjs = await client.head(base + "pyodide.mjs")
        assert mjs.headers["content-type"].startswith("text/javascript")
        for url in config["pyodide"]["wheels"]:
            r = await client.head(url)
            assert r.status_code == 200, url
            assert r.headers["content-type"] == "application/zip"
            assert r.headers["cache-control"] == IMMUTABLE
