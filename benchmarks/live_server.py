"""A live server process for the fuzzer and the soak, in one of two stacks.

* ``serve`` (the default): what ``synced-store serve`` runs — ``run_server`` with
  ``uvicorn_config`` and the process's :class:`ServerLimits` (the 8 MiB WebSocket message
  limit enforced by ``LimitedWebSocketProtocol``, header timeout against slowloris, the
  connection cap), dev authentication (the token is the user id) on 127.0.0.1. This module is
  that child: ``python -m benchmarks.live_server BACKEND --port P --data-dir D [--limits JSON]
  [--retention JSON]``.
* ``testing``: :class:`synced_store.testing.server_process.ServerProcess` as the test suite
  uses it (``uvicorn.run`` with ``ws_max_size``, uvicorn's own WebSocket implementation and
  HTTP defaults).

Both are :class:`ServerProcess` objects: ``rss()``, ``peak_rss()``, ``reset_peak_rss()``,
``open_fds()``, ``kill()``; ``stderr`` goes to a file.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
for _p in (str(ROOT), str(TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from synced_store.testing.server_process import ServerProcess  # noqa: E402

__all__ = ["STACKS", "ServeProcess", "code_version", "start_server"]

STACKS = ("serve", "testing", "postgres")


class ServeProcess(ServerProcess):
    """The ``serve`` stack: this module as the child process (see the module doc)."""

    def start(self, *, timeout: float = 20.0, healthy: bool = True) -> None:
        import subprocess

        env = dict(os.environ)
        env.update(self.env)
        paths = [*self.pythonpath, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.live_server",
                self.backend,
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--limits",
                json.dumps(self.limits),
                "--retention",
                json.dumps(self.retention),
            ],
            cwd=ROOT,
            env=env,
            stderr=self.stderr,
            stdout=self.stderr,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                if r.status_code == 200 or not healthy:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("server did not become ready")
            time.sleep(0.05)  # readiness polling of a child process, bounded by the deadline


def code_version() -> str:
    """The commit the server code comes from, and whether ``src/`` has uncommitted changes
    (read-only git commands)."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}" if head else "unknown"


def start_server(
    stack: str,
    backend: str,
    data_dir: Path,
    log_path: Path,
    *,
    limits: dict[str, Any] | None = None,
    retention: dict[str, Any] | None = None,
    log_level: str = "WARNING",
    database: str | None = None,
) -> ServerProcess:
    """Start a server of ``stack`` serving ``backend`` (``module:attr``); stderr to
    ``log_path``. The caller kills it (``kill()``) or stops it (``stop()``). The
    ``postgres`` stack is the testing one on PostgreSQL (``database``: its URI)."""
    if stack not in STACKS:
        raise ValueError(f"stack must be one of {STACKS}")
    if (stack == "postgres") != (database is not None):
        raise ValueError("the postgres stack, and only it, takes a database")
    cls = ServeProcess if stack == "serve" else ServerProcess
    log = open(log_path, "ab")  # noqa: SIM115 - closed once the child holds it
    try:
        server = cls(
            backend,
            data_dir,
            pythonpath=[str(ROOT), str(TESTS)],
            env={"SYNCED_STORE_TEST_LOG": log_level},
            limits=limits,
            retention=retention,
            stderr=log,
            **({"database": database} if database else {}),
        )
        server.start()
    finally:
        log.close()  # the child has its own descriptor of the file
    return server


def main() -> None:
    """The ``serve`` stack's child process."""
    import argparse
    import importlib

    from synced_store.cli.serving import run_server
    from synced_store.server import create_app
    from synced_store.server.limits import Retention, ServerLimits

    p = argparse.ArgumentParser()
    p.add_argument("backend")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--limits", default="{}")
    p.add_argument("--retention", default="{}")
    args = p.parse_args()
    limits = ServerLimits(**json.loads(args.limits))
    retention = Retention(**json.loads(args.retention))
    mod, _, attr = args.backend.partition(":")
    backend = getattr(importlib.import_module(mod), attr or "backend")
    level = os.environ.get("SYNCED_STORE_TEST_LOG", "WARNING").lower()
    run_server(
        lambda: create_app(
            backend,
            data_dir=args.data_dir,
            authenticate=lambda t: t or None,
            limits=limits,
            retention=retention,
        ),
        host="127.0.0.1",
        port=args.port,
        log_level=level,
        limits=limits,
    )


if __name__ == "__main__":
    main()
