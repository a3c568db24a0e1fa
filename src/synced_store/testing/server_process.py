"""A synced-store server in a child process, for tests that kill it (``kill -9``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "free_port"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """Runs ``create_app(<backend>)`` under uvicorn in a subprocess on 127.0.0.1.

    ``backend`` is ``"module:attr"`` importable by the child (``pythonpath`` is prepended to its
    ``sys.path``). ``env`` adds environment variables (for example a bot's pace).
    """

    def __init__(
        self,
        backend: str,
        data_dir: str | Path,
        *,
        port: int | None = None,
        pythonpath: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.pythonpath = pythonpath or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (``ws://127.0.0.1:PORT``)."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> None:
        """Start the server and wait (bounded) until ``/healthz`` answers."""
        env = dict(os.environ)
        env.update(self.env)
        paths = [*self.pythonpath, env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synced_store.testing._serve",
                self.backend,
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            env=env,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("server did not become ready")
            time.sleep(0.05)  # readiness polling of a child process, bounded by the deadline

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL, i.e. ``kill -9``) and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM)."""
        self.kill(signal.SIGTERM)
