"""The browser client: the JS shell, and Pyodide running the same Python mutators in the page.

``routes(app_module)`` returns Starlette routes to pass to
``create_app(backend, routes=routes("examples.chat"))``:

=========================  ======================================================================
``/``                      the app's page (``index.html`` of its static folder), config inlined
``/_ss/static/*``          the JS shell (``synced-store.js``, ``protocol.js``, ``persist.js``) and
                           the engine worker (revalidated: ``no-cache`` + ETag)
``/_ss/app/*``             the app's static folder: its page's JS and CSS (revalidated)
``/_ss/py/<hash>.json``    Python sources for the page: ``synced_store``'s pure modules (schema,
                           types, errors, core, protocol), the bridge and the app's mutator
                           modules (immutable: the hash is of the content)
``/pyodide/<version>/*``   the npm ``pyodide`` runtime (immutable)
``/wheels/*``              pydantic, pydantic-core for Pyodide's ABI and their deps (immutable)
=========================  ======================================================================

Modules: ``page`` (the routes and the page's config), ``bundle`` (the Python shipped to the
page), ``pyodide_bridge`` (a thin pump around the engine in the page), ``build`` (fetching the
runtime), ``serve`` (``python -m synced_store.web.serve APP_MODULE``), ``testing`` (headless
Chromium helpers). The runtime and wheels come from the build step
(``python -m synced_store.web.build``, ``scripts/build-web``); without it the page still works,
non-optimistically (mutations go to the server and show when it confirms them). See
``docs/browser.md``.
"""

from __future__ import annotations

from .bundle import PythonBundle, python_bundle
from .page import IMMUTABLE, app_static_dir, load_app_backend, page_config, routes

__all__ = [
    "IMMUTABLE",
    "PythonBundle",
    "app_static_dir",
    "load_app_backend",
    "page_config",
    "python_bundle",
    "routes",
]
