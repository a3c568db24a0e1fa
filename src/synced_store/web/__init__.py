"""The browser client: the page, its JS shell, and Pyodide running the same Python mutators.

``routes(app_module)`` returns Starlette routes to pass to
``create_app(backend, routes=routes("examples.chat"))``:

=========================  ======================================================================
``/``                      the app's page (the chat page), with its config inlined
``/_ss/static/*``          the JS shell, the page's JS and CSS (revalidated: ``no-cache`` + ETag)
``/_ss/py/<hash>.json``    Python sources for the page: ``synced_store``'s pure modules (schema,
                           types, errors, core, protocol), the bridge and the app's mutator
                           modules (immutable: the hash is of the content)
``/pyodide/<version>/*``   the npm ``pyodide`` runtime (immutable)
``/wheels/*``              pydantic, pydantic-core for Pyodide's ABI and their deps (immutable)
=========================  ======================================================================

The runtime and wheels come from the build step (``python -m synced_store.web.build``,
``scripts/build-web``); without it the page still works, non-optimistically (mutations go to
the server and show when it confirms them). See ``docs/browser.md``.
"""

from __future__ import annotations

import ast
import hashlib
import html
import importlib
import importlib.util
import json
import logging
import mimetypes
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..core.keys import MAX_VALUE_DEPTH
from ..schema import BackendConfig, Schema

if TYPE_CHECKING:
    from .build import BuildInfo

__all__ = ["PythonBundle", "page_config", "python_bundle", "routes"]

log = logging.getLogger("synced_store.web")

STATIC_DIR = Path(__file__).parent / "static"
_PKG_ROOT = Path(__file__).resolve().parents[1]
#: ``synced_store`` modules the page needs (pure: stdlib + pydantic only).
_PURE_PARTS = ("__init__.py", "errors.py", "schema.py", "types.py", "core", "protocol")
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
IMMUTABLE = "public, max-age=31536000, immutable"

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("application/zip", ".whl")


class _CachedStatic(StaticFiles):
    """StaticFiles with a fixed ``Cache-Control`` header."""

    def __init__(self, *, directory: Path, cache_control: str) -> None:
        super().__init__(directory=directory, check_dir=False)
        self.cache_control = cache_control

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        resp = super().file_response(full_path, stat_result, scope, status_code)
        resp.headers["Cache-Control"] = self.cache_control
        return resp


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


def _load_backend(app_module: str) -> BackendConfig:
    mod_name, _, attr = app_module.partition(":")
    candidates = [(mod_name, attr or "backend")]
    if not attr:
        candidates.append((mod_name + ".app", "backend"))
    errors = []
    for m, a in candidates:
        try:
            obj = getattr(importlib.import_module(m), a)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{m}.{a}: {exc}")
            continue
        if isinstance(obj, BackendConfig):
            return obj
        errors.append(f"{m}.{a} is not a BackendConfig")
    raise ValueError(f"no backend found for {app_module!r}: {'; '.join(errors)}")


def page_config(
    backend: BackendConfig, bundle: PythonBundle, build: BuildInfo | None, *, title: str
) -> dict[str, Any]:
    """The JSON inlined in the page: everything the shell needs to start."""
    schema: Schema = backend.schema
    pyodide: dict[str, Any] | None = None
    if build is not None:
        pyodide = {
            "version": build.pyodide_version,
            "indexURL": f"/pyodide/{build.pyodide_version}/",
            "wheels": [f"{_wheels_url(build)}{w}" for w in build.wheels],
            "python": {"bundle": f"/_ss/py/{bundle.digest}.json", **bundle.spec},
        }
    return {
        "title": title,
        "schemaVersion": schema.schema_version,
        "syncPath": "/sync/",
        "mutators": sorted(schema.mutators),
        "maxValueDepth": MAX_VALUE_DEPTH,
        "actions": sorted(schema.actions),
        "pyodide": pyodide,
    }


def routes(
    app_module: str = "examples.chat",
    *,
    build_dir: str | Path | None = None,
    backend: BackendConfig | None = None,
    title: str = "synced-store chat",
    page: str | Path | None = None,
) -> list[BaseRoute]:
    """Starlette routes serving the browser client of ``app_module``'s backend.

    Args:
        app_module: the app's package or module (``"examples.chat"``; ``"pkg.mod:attr"`` also
            works); its ``backend`` (or ``<module>.app.backend``) is loaded unless given.
        build_dir: the output of the build step (default: ``$SYNCED_STORE_WEB_BUILD``, else
            ``./web-build``, else the repo's ``web-build/``). Missing: the page runs without
            Pyodide (non-optimistic mutations) and a warning is logged.
        backend: the backend config, if already loaded.
        title: the page title.
        page: an HTML template to serve at ``/`` instead of the chat page; ``{{CONFIG}}`` in it
            is replaced by the JSON config and ``{{TITLE}}`` by the title.
    """
    if backend is None:
        backend = _load_backend(app_module)
    bundle = python_bundle(backend, app_module)
    from .build import load_build

    build = load_build(Path(build_dir) if build_dir is not None else None)
    if build is None:
        log.warning(
            "synced-store web: no web build found (run `scripts/build-web`); the page "
            "will run without Pyodide: mutations are not optimistic"
        )
    config = page_config(backend, bundle, build, title=title)
    template_path = Path(page) if page is not None else STATIC_DIR / "index.html"
    template = template_path.read_text()
    static_version = _static_version()
    page_html = (
        template.replace("{{CONFIG}}", json.dumps(config).replace("</", "<\\/"))
        .replace("{{TITLE}}", html.escape(title))
        .replace("{{V}}", static_version)
    )
    page_etag = '"' + hashlib.sha256(page_html.encode()).hexdigest()[:20] + '"'

    async def index(request: Request) -> Response:
        headers = {"Cache-Control": "no-cache", "ETag": page_etag}
        if request.headers.get("if-none-match") == page_etag:
            return Response(status_code=304, headers=headers)
        return HTMLResponse(page_html, headers=headers)

    async def pysrc(request: Request) -> Response:
        if request.path_params["digest"] != bundle.digest:
            return Response("stale bundle", status_code=404)
        return Response(
            bundle.body, media_type="application/json", headers={"Cache-Control": IMMUTABLE}
        )

    out: list[BaseRoute] = [
        Route("/", index),
        Route("/_ss/py/{digest}.json", pysrc),
        Mount(
            "/_ss/static",
            app=_CachedStatic(directory=STATIC_DIR, cache_control="no-cache"),
            name="ss-static",
        ),
    ]
    if build is not None:
        out += [
            Mount(
                f"/pyodide/{build.pyodide_version}",
                app=_CachedStatic(directory=build.pyodide_dir, cache_control=IMMUTABLE),
                name="pyodide",
            ),
            Mount(
                _wheels_url(build).rstrip("/"),
                app=_CachedStatic(directory=build.wheels_dir, cache_control=IMMUTABLE),
                name="wheels",
            ),
        ]
    return out


def _wheels_url(build: BuildInfo) -> str:
    # Precompiled wheels keep their file names but differ in content: another URL.
    return "/wheels/pyc/" if build.wheels_subdir == "wheels-pyc" else "/wheels/"


def _static_version() -> str:
    h = hashlib.sha256()
    for f in sorted(STATIC_DIR.iterdir()):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]
