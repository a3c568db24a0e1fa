"""Layering rules, checked on the import statements of every module in ``src/synced_store``.

The sans-I/O layers import no I/O (protocol/ and core/ must run anywhere, Pyodide included),
the server never reaches into the client's engine, and the library never imports the example
apps (they depend on it, not the other way round).
"""

from __future__ import annotations

import ast
import re
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


def imports_under(directory: Path) -> list[tuple[Path, str]]:
    """``(file, imported module)`` for every module imported by a ``.py`` file under
    ``directory`` (paths relative to ``src``)."""
    out = []
    for path in sorted(directory.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        package = ".".join(rel.with_suffix("").parts[:-1])
        out += [(rel, mod) for mod in sorted(imported_modules(path.read_text(), package))]
    return out


def violations(layer: str) -> list[str]:
    out = []
    for rel, mod in imports_under(PACKAGE / layer):
        parts = mod.split(".")
        if parts[0] in FORBIDDEN:
            out.append(f"{rel}: imports {mod}")
        if parts[0] == "synced_store" and len(parts) > 1 and parts[1] in FORBIDDEN_INTERNAL[layer]:
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


def test_the_server_never_imports_the_client_engine() -> None:
    """What both sides must agree on (the ``$skip`` marker, the lastMutationID rule, wire
    messages) lives in core/sequencing.py or protocol/, not in the client's engine."""
    bad = [
        f"{rel}: imports {mod}"
        for rel, mod in imports_under(PACKAGE / "server")
        if mod == "synced_store.core.client_engine"
        or mod.startswith("synced_store.core.client_engine.")
    ]
    assert bad == []


#: The example apps' import names: ``examples`` in a clone, ``synced_store_examples`` installed.
EXAMPLE_PACKAGES = ("examples", "synced_store_examples")
_MODULE_NAME = re.compile(r"[A-Za-z_][\w.]*(:[\w.]+)?")


def example_references(source: str, package: str) -> list[str]:
    """Imports of the example apps in ``source``, and string constants that name one of their
    modules (``importlib.import_module("examples.chat.app")``, ``"examples.chat:backend"``)."""
    found = [
        mod for mod in imported_modules(source, package) if mod.split(".")[0] in EXAMPLE_PACKAGES
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if _MODULE_NAME.fullmatch(text) and text.split(".")[0].split(":")[0] in (
                EXAMPLE_PACKAGES
            ):
                found.append(repr(text))
    return sorted(found)


def test_nothing_in_the_library_refers_to_the_examples() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        package = ".".join(rel.with_suffix("").parts[:-1])
        bad += [f"{rel}: {ref}" for ref in example_references(path.read_text(), package)]
    assert bad == []


def test_the_examples_checker_sees_imports_and_module_names() -> None:
    src = "\n".join(
        [
            "import examples.chat",
            "from synced_store_examples.todo import backend",
            "import importlib",
            "m = importlib.import_module('examples.chat.app')",
            "spec = 'examples.todo:backend'",
            "help = 'synced-store serve examples.todo:backend --port 9000'",  # prose: fine
            "other = 'examplesque.x'",
        ]
    )
    assert example_references(src, "synced_store.cli") == [
        "'examples.chat.app'",
        "'examples.todo:backend'",
        "examples.chat",
        "synced_store_examples.todo",
        "synced_store_examples.todo.backend",
    ]


#: The I/O layers' own rules: storage knows no wire format and no mutator logic (it stores
#: what it is given); the server reaches databases only through storage/.
IO_LAYER_RULES = {
    "storage": (frozenset(), frozenset({"protocol", "core", "server", "client", "cli", "web"})),
    "server": (frozenset({"sqlite3", "asyncpg", "psycopg"}), frozenset()),
}


@pytest.mark.parametrize("layer", sorted(IO_LAYER_RULES))
def test_io_layer_imports(layer: str) -> None:
    modules, internal = IO_LAYER_RULES[layer]
    bad = []
    for rel, mod in imports_under(PACKAGE / layer):
        parts = mod.split(".")
        if parts[0] in modules or (
            parts[0] == "synced_store" and len(parts) > 1 and parts[1] in internal
        ):
            bad.append(f"{rel}: imports {mod}")
    assert bad == []
