"""A synced-store server in a child process, for tests that kill it (``kill -9``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    ``sys.path``). ``env`` adds environment variables (for example a bot's pace). ``limits``
    and ``retention`` are fields of :class:`~synced_store.server.limits.ServerLimits` and
    :class:`~synced_store.server.limits.Retention`; ``database`` serves that PostgreSQL database
    instead of ``data_dir`` (several processes may share it); ``actions`` are options of the
    action runner (``{"job_lease": 2.0}``); ``rlimits`` maps ``resource`` limit names
    (``"RLIMIT_NOFILE"``, ``"RLIMIT_FSIZE"``) to soft limits set in the child before it serves.
    """

    def __init__(
        self,
        backend: str,
        data_dir: str | Path,
        *,
        port: int | None = None,
        pythonpath: list[str] | None = None,
        env: dict[str, str] | None = None,
        limits: dict[str, Any] | None = None,
        retention: dict[str, Any] | None = None,
        rlimits: dict[str, int] | None = None,
        stderr: Any = None,
        database: str | None = None,
        actions: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.pythonpath = pythonpath or []
        self.env = env or {}
        self.limits = limits or {}
        self.retention = retention or {}
        self.rlimits = rlimits or {}
        self.stderr = stderr
        self.database = database
        self.actions = actions or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL (``ws://127.0.0.1:PORT``)."""
        return f"ws://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0, healthy: bool = True) -> None:
        """Start the server and wait (bounded) until ``/healthz`` answers 200 (with
        ``healthy=False``: answers at all, for a server expected to report itself unwell)."""
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
                "--limits",
                json.dumps(self.limits),
                "--retention",
                json.dumps(self.retention),
                "--rlimits",
                json.dumps(self.rlimits),
                "--actions",
                json.dumps(self.actions),
                *(["--database", self.database] if self.database else []),
            ],
            env=env,
            stderr=self.stderr,
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

    @property
    def pid(self) -> int:
        """The server process's pid (it must be running)."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    def rss(self) -> int:
        """The server process's resident memory now, in bytes (``VmRSS``)."""
        return _status_kb(self.pid, "VmRSS") * 1024

    def peak_rss(self) -> int:
        """The most resident memory the server process has used, in bytes (``VmHWM``)."""
        return _status_kb(self.pid, "VmHWM") * 1024

    def reset_peak_rss(self) -> None:
        """Start measuring :meth:`peak_rss` from now (``/proc/<pid>/clear_refs``)."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def open_fds(self) -> int:
        """How many file descriptors the server process has open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (default SIGKILL, i.e. ``kill -9``) and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        """Stop gracefully (SIGTERM)."""
        self.kill(signal.SIGTERM)


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")
