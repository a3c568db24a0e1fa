"""The sans-I/O layers import no I/O: protocol/ and core/ must run anywhere, Pyodide included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import synced_store

PACKAGE = Path(synced_store.__file__).parent

#: Event loops, sockets, databases, servers, HTTP clients and C-extension JSON: not in the core.
#: (orjson is excluded too because the core must run in Pyodide, which has no orjson wheel.)
FORBIDDEN = frozenset(
    {"asyncio", "sqlite3", "websockets", "starlette", "uvicorn", "httpx", "orjson", "asyncpg"}
)
#: synced_store subpackages each layer may not import (dependencies point up the layout).
FORBIDDEN_INTERNAL = {
    "protocol": frozenset({"core", "storage", "server", "client", "testing", "cli", "web", "bot"}),
    "core": frozenset({"storage", "server", "client", "testing", "cli", "web", "bot"}),
}


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of every module ``source`` imports (relative imports resolved against
    ``package``, the dotted package of the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{alias.name}" for alias in node.names)
    return names


def violations(layer: str) -> list[str]:
    out = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        package = ".".join(rel.with_suffix("").parts[:-1])
        for mod in sorted(imported_modules(path.read_text(), package)):
            top = mod.split(".")[0]
            if top in FORBIDDEN:
                out.append(f"{rel}: imports {mod}")
            parts = mod.split(".")
            if top == "synced_store" and len(parts) > 1 and parts[1] in FORBIDDEN_INTERNAL[layer]:
                out.append(f"{rel}: imports {mod}")
    return out


@pytest.mark.parametrize("layer", ["protocol", "core"])
def test_layer_imports_no_io(layer: str) -> None:
    files = list((PACKAGE / layer).rglob("*.py"))
    assert len(files) >= 3, f"expected the {layer} package at {PACKAGE / layer}"
    assert violations(layer) == []


def test_the_checker_sees_every_import_form() -> None:
    src = "\n".join(
        [
            "import asyncio",
            "import os.path, sqlite3 as db",
            "from orjson import dumps",
            "from websockets.asyncio import client",
            "from ..server import app",
            "from .. import storage",
            "from . import keys",
            "def f():",
            "    import httpx",
        ]
    )
    names = imported_modules(src, "synced_store.core")
    assert {"asyncio", "sqlite3", "orjson", "websockets.asyncio", "httpx"} <= names
    assert "synced_store.server" in names
    assert "synced_store.storage" in names
    assert "synced_store.core.keys" in names
    assert "os.path" in names
