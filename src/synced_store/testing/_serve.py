"""``python -m synced_store.testing._serve MODULE:ATTR --port P --data-dir D`` (test servers).

``--database DSN`` serves PostgreSQL instead of the data dir; ``--actions`` takes a JSON object
of the action runner's options (``{"job_lease": 2}``); ``--limits`` and ``--retention`` take
JSON objects of ``ServerLimits`` / ``Retention`` fields;
``--rlimits`` a JSON object of ``resource`` limits (``{"RLIMIT_NOFILE": 256}``), set first as
both the soft and the hard limit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import resource
import signal

import uvicorn

from ..server.app import create_app
from ..server.limits import Retention, ServerLimits
from ..server.uvicorn_setup import uvicorn_config


def main() -> None:
    """Parse arguments and serve until killed."""
    p = argparse.ArgumentParser()
    p.add_argument("backend")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--database", default=None)
    p.add_argument("--actions", default="{}")
    p.add_argument("--limits", default="{}")
    p.add_argument("--retention", default="{}")
    p.add_argument("--rlimits", default="{}")
    args = p.parse_args()
    for name, limit in json.loads(args.rlimits).items():
        # Soft and hard: the server must not be able to raise it again (fd_budget tries).
        which = getattr(resource, name)
        resource.setrlimit(which, (limit, limit))
        if name == "RLIMIT_FSIZE":  # a write past the limit fails with EFBIG instead of a kill
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = ServerLimits(**json.loads(args.limits))
    retention = Retention(**json.loads(args.retention))
    mod, _, attr = args.backend.partition(":")
    backend = getattr(importlib.import_module(mod), attr or "backend")
    logging.basicConfig(level=os.environ.get("SYNCED_STORE_TEST_LOG", "WARNING").upper())
    app = create_app(
        backend,
        data_dir=args.data_dir,
        database=args.database,
        action_options=json.loads(args.actions),
        authenticate=lambda t: t or None,
        limits=limits,
        retention=retention,
    )
    config = uvicorn_config(app, limits, host="127.0.0.1", port=args.port, log_level="warning")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
