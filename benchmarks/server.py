"""The benchmark server: ``python -m benchmarks.server --port P --data-dir D``.

A real uvicorn server on 127.0.0.1 serving :mod:`benchmarks.app` with
``synced_store.server.create_app``. It runs in its own process; the runner stops it by PID.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import os
import signal
import sys

import uvicorn

from synced_store.server import create_app

from .app import backend, bench_authenticate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = create_app(backend, data_dir=args.data_dir, authenticate=bench_authenticate)
    profile = os.environ.get("SYNCED_STORE_BENCH_PROFILE")  # write cProfile stats here
    prof = cProfile.Profile() if profile else None
    if prof is not None:

        def dump(signum: int, frame: object) -> None:
            # uvicorn re-raises the SIGTERM it caught once it has shut down: dump, then exit.
            prof.disable()
            prof.dump_stats(profile)
            sys.exit(0)

        signal.signal(signal.SIGTERM, dump)
        prof.enable()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        ws_max_size=64 * 1024 * 1024,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
