"""``python -m synced_store.testing._serve MODULE:ATTR --port P --data-dir D`` (test servers)."""

from __future__ import annotations

import argparse
import importlib
import logging

import uvicorn

from ..server.app import create_app


def main() -> None:
    """Parse arguments and serve until killed."""
    p = argparse.ArgumentParser()
    p.add_argument("backend")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    args = p.parse_args()
    mod, _, attr = args.backend.partition(":")
    backend = getattr(importlib.import_module(mod), attr or "backend")
    logging.basicConfig(level=logging.WARNING)
    app = create_app(backend, data_dir=args.data_dir, authenticate=lambda t: t or None)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_max_size=8 << 20)


if __name__ == "__main__":
    main()
