"""Serve ``tests.web.depth_app`` with a bare page (no page script: the tests drive the shell).

``python -m tests.web.depth_server --port P --data-dir D --page TEMPLATE``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from synced_store.server.app import create_app
    from synced_store.web import routes

    from .depth_app import backend

    p = argparse.ArgumentParser(prog="python -m tests.web.depth_server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--page", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    app = create_app(
        backend,
        data_dir=args.data_dir,
        authenticate=lambda t: t or None,
        routes=routes("tests.web.depth_app", backend=backend, page=args.page, title="depth"),
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
