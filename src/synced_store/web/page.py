"""The routes serving an app's page: the page itself, its files, the shell, Python and Pyodide.

The library serves the shell (``static/``: ``synced-store.js``, ``engine-worker.js``); the app
ships its own page: a folder (``static_dir``) holding ``index.html`` and the files it loads.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import importlib.util
import json
import logging
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from ..core.keys import MAX_VALUE_DEPTH
from ..schema import BackendConfig
from .bundle import PythonBundle, python_bundle

if TYPE_CHECKING:
    from .build import BuildInfo

__all__ = [
    "APP_STATIC_URL",
    "IMMUTABLE",
    "SHELL_STATIC_URL",
    "app_static_dir",
    "load_app_backend",
    "page_config",
    "routes",
]

log = logging.getLogger("synced_store.web")

#: The library's own browser files: the shell and the engine worker.
STATIC_DIR = Path(__file__).parent / "static"
SHELL_STATIC_URL = "/_ss/static"
#: Where the files of the app's ``static_dir`` are served.
APP_STATIC_URL = "/_ss/app"
IMMUTABLE = "public, max-age=31536000, immutable"

#: Served at ``/`` when the app ships no page: the config is inlined all the same, so the
#: shell can be driven from the browser's console.
PLACEHOLDER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{TITLE}}</title>
<link rel="icon" href="data:,">
<script type="application/json" id="synced-store-config">{{CONFIG}}</script>
</head><body>
<h1>{{TITLE}}</h1>
<p>This app ships no page. Give <code>synced_store.web.routes()</code> a
<code>static_dir</code> holding an <code>index.html</code> (or put a <code>static/</code>
folder next to the app's module). The sync endpoint is <code>/sync/&lt;instance_id&gt;</code>;
the shell is <code>/_ss/static/synced-store.js</code>.</p>
</body></html>
"""

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


def load_app_backend(app_module: str) -> BackendConfig:
    """The :class:`BackendConfig` of ``app_module``: ``"pkg.mod:attr"``, else the module's
    ``backend``, else ``<module>.app.backend``.

    Raises:
        ValueError: none of them is a BackendConfig.
    """
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


def app_static_dir(app_module: str) -> Path | None:
    """The ``static/`` folder of the app: beside the module (``pkg/static`` for the package
    ``pkg``, and for its module ``pkg.mod``), or None if there is none."""
    name = app_module.partition(":")[0]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin is not None:
        base = Path(spec.origin).parent
    else:
        return None
    folder = base / "static"
    return folder if folder.is_dir() else None


def page_config(
    backend: BackendConfig, bundle: PythonBundle, build: BuildInfo | None, *, title: str
) -> dict[str, Any]:
    """The JSON inlined in the page: everything the shell needs to start."""
    schema = backend.schema
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
        # Older versions whose pending mutations the server still takes (it migrates them).
        "migratesFrom": [v for v in range(schema.schema_version) if schema.can_migrate_from(v)],
        "syncPath": "/sync/",
        "mutators": sorted(schema.mutators),
        "maxValueDepth": MAX_VALUE_DEPTH,
        "actions": sorted(schema.actions),
        # Windowed tables (pull_windows): protocol.js drops changes below their floor.
        "windowed": sorted(schema.pull_windows),
        "pyodide": pyodide,
    }


def routes(
    app_module: str,
    *,
    static_dir: str | Path | None = None,
    page: str | Path | None = None,
    build_dir: str | Path | None = None,
    backend: BackendConfig | None = None,
    title: str = "synced-store",
) -> list[BaseRoute]:
    """Starlette routes serving the browser client of ``app_module``'s backend.

    Args:
        app_module: the app's package or module (``"examples.chat"``; ``"pkg.mod:attr"`` also
            works); its ``backend`` (or ``<module>.app.backend``) is loaded unless given. The
            app's modules that define mutator handlers run in the page.
        static_dir: the app's page: a folder with ``index.html`` and the files it loads,
            served under ``/_ss/app/``. Default: the ``static/`` folder beside ``app_module``
            (:func:`app_static_dir`), if there is one.
        page: the HTML template served at ``/`` (default: ``static_dir/index.html``; without
            either, a placeholder). ``{{CONFIG}}`` in it is replaced by the JSON config,
            ``{{TITLE}}`` by the title and ``{{V}}`` by a hash of the static files (for
            ``?v=`` cache busting).
        build_dir: the output of the build step (default: ``$SYNCED_STORE_WEB_BUILD``, else
            ``./web-build``, else the repo's ``web-build/``). Missing: the page runs without
            Pyodide (non-optimistic mutations) and a warning is logged.
        backend: the backend config, if already loaded.
        title: the page title.
    """
    if backend is None:
        backend = load_app_backend(app_module)
    bundle = python_bundle(backend, app_module)
    from .build import load_build

    build = load_build(Path(build_dir) if build_dir is not None else None)
    if build is None:
        log.warning(
            "synced-store: no web build found (run `scripts/build-web`); the page "
            "will run without Pyodide: mutations are not optimistic"
        )
    app_dir = Path(static_dir) if static_dir is not None else app_static_dir(app_module)
    if page is not None:
        template = Path(page).read_text()
    elif app_dir is not None and (app_dir / "index.html").is_file():
        template = (app_dir / "index.html").read_text()
    else:
        template = PLACEHOLDER_PAGE
    config = page_config(backend, bundle, build, title=title)
    static_dirs = [STATIC_DIR] if app_dir is None else [STATIC_DIR, app_dir]
    page_html = (
        template.replace("{{CONFIG}}", json.dumps(config).replace("</", "<\\/"))
        .replace("{{TITLE}}", html.escape(title))
        .replace("{{V}}", _static_version(static_dirs))
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
            SHELL_STATIC_URL,
            app=_CachedStatic(directory=STATIC_DIR, cache_control="no-cache"),
            name="ss-static",
        ),
    ]
    if app_dir is not None:
        out.append(
            Mount(
                APP_STATIC_URL,
                app=_CachedStatic(directory=app_dir, cache_control="no-cache"),
                name="ss-app",
            )
        )
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


def _static_version(folders: list[Path]) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:12]
