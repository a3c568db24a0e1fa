"""The Python shipped to the page: ``synced_store``'s pure modules, the bridge, and the app's
mutator modules (found from the backend's handlers, so it never goes stale).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..schema import BackendConfig

__all__ = ["PythonBundle", "python_bundle"]

log = logging.getLogger("synced_store.web")

_PKG_ROOT = Path(__file__).resolve().parents[1]
#: ``synced_store`` modules the page needs (pure: stdlib + pydantic only).
_PURE_PARTS = (
    "__init__.py",
    "app_config.py",
    "errors.py",
    "schema.py",
    "types.py",
    "core",
    "protocol",
)
#: Imports that must never reach the page.
_SERVER_ONLY = (
    "synced_store.server",
    "synced_store.client",
    "synced_store.storage",
    "synced_store.testing",
    "synced_store.cli",
    "synced_store.web",
    "starlette",
    "orjson",
    "uvicorn",
    "websockets",
    "httpx",
    "asyncpg",
    "sqlite3",
)


class PythonBundle:
    """The Python sources shipped to the page, and how to find the app's handlers in them."""

    def __init__(self, files: dict[str, str], spec: dict[str, Any]) -> None:
        self.files = files
        self.spec = spec
        body = json.dumps({"files": files}, sort_keys=True).encode()
        self.body = body
        self.digest = hashlib.sha256(body).hexdigest()[:16]


def _module_file(name: str) -> Path | None:
    mod = sys.modules.get(name)
    f = getattr(mod, "__file__", None) if mod is not None else None
    if f is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        f = spec.origin if spec is not None else None
    if f is None or not f.endswith(".py"):
        return None
    return Path(f)


def _imports_of(name: str, path: Path) -> Iterable[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = name.split(".")
                drop = node.level - 1 if is_pkg else node.level
                base_parts = base_parts[: len(base_parts) - drop] if drop else base_parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            for a in node.names:
                yield f"{base}.{a.name}"


def python_bundle(backend: BackendConfig, app_module: str) -> PythonBundle:
    """Collect the page's Python: pure ``synced_store``, the bridge and the app's client code.

    The app's modules are those defining the mutator handlers, plus what they import from the
    same top-level package (transitively); the package ``__init__`` files are replaced by empty
    ones, so server-only code (actions, the app module) is never imported in the page.
    """
    files: dict[str, str] = {}
    for part in _PURE_PARTS:
        p = _PKG_ROOT / part
        for f in sorted(p.glob("*.py")) if p.is_dir() else [p]:
            files[f"synced_store/{f.relative_to(_PKG_ROOT).as_posix()}"] = f.read_text()
    files["_synced_store_bridge.py"] = (Path(__file__).parent / "pyodide_bridge.py").read_text()

    mutators: dict[str, list[str]] = {}
    todo: list[str] = []
    for name, fn in backend.mutators.items():
        mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
        if not mod or "<locals>" in qual or mod == "__main__":
            raise ValueError(
                f"mutator {name!r} must be a module-level function to run in the "
                f"browser (got {mod}.{qual})"
            )
        mutators[name] = [mod, qual]
        todo.append(mod)
    tops = {m.split(".")[0] for m in todo} | {app_module.split(".")[0]}
    shipped: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in shipped or name.split(".")[0] not in tops:
            continue
        path = _module_file(name)
        if path is None:
            continue
        if path.name == "__init__.py":
            # Packages get empty stubs; still follow what the package itself is asked for.
            shipped.setdefault(name, path)
            continue
        shipped[name] = path
        todo.extend(_imports_of(name, path))
    schema_ref: list[str] | None = None
    for name in sorted(shipped):
        mod = sys.modules.get(name) or importlib.import_module(name)
        for attr, val in vars(mod).items():
            if val is backend.schema and not attr.startswith("__"):
                schema_ref = [name, attr]
                break
        if schema_ref:
            break
    if schema_ref is None:
        raise ValueError(
            f"the schema of {app_module} is not defined in a module shared with "
            f"the browser ({', '.join(sorted(shipped))}); define it in the module "
            "holding the mutators or one it imports"
        )
    packages: set[str] = set()
    for name, path in shipped.items():
        parts = name.split(".")
        for i in range(1, len(parts) + (path.name == "__init__.py")):
            packages.add(".".join(parts[:i]))
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        for imp in _imports_of(name, path):
            if imp.startswith(_SERVER_ONLY):
                log.warning("%s imports %s, which is not available in the browser", name, imp)
        files["/".join(parts) + ".py"] = text
    for pkg in packages:
        files.setdefault("/".join(pkg.split(".")) + "/__init__.py", "")
    spec = {"schema": schema_ref, "mutators": mutators}
    return PythonBundle(files, spec)
