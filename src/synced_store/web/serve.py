"""Serve an app's backend together with its web page (tests, benchmarks, screenshots).

``python -m synced_store.web.serve APP_MODULE [--host 127.0.0.1] [--port 8000] [--data-dir D]``

Takes any app module: ``routes(app_module)`` finds its ``backend`` and its page (the ``static/``
folder beside the module, or ``--static-dir``). Development auth: the token is the user id.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted."""
    import uvicorn

    from ..server.app import create_app
    from .page import load_app_backend, routes

    p = argparse.ArgumentParser(prog="python -m synced_store.web.serve")
    p.add_argument("app_module")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", type=Path, default=Path("./data"))
    p.add_argument("--build-dir", type=Path, default=None)
    p.add_argument("--static-dir", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    backend = load_app_backend(args.app_module)
    app = create_app(
        backend,
        data_dir=args.data_dir,
        authenticate=lambda t: t or None,
        routes=routes(
            args.app_module,
            backend=backend,
            build_dir=args.build_dir,
            static_dir=args.static_dir,
        ),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
