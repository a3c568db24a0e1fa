"""Helpers for driving the page in headless Chromium (browser tests, benchmarks, screenshots).

Uses the Debian ``chromium`` (``/usr/bin/chromium``) through PyPI ``playwright``'s
``executable_path``; Playwright's own browser download is never used. Every request the page
makes is checked: anything not addressed to 127.0.0.1 is aborted and recorded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ..testing.server_process import free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Playwright, Route

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "NetworkGuard",
    "WebServer",
    "free_port",
    "launch_chromium",
    "missing_requirements",
]

CHROMIUM = os.environ.get("SYNCED_STORE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-pings",
]
LOCAL_HOSTS = frozenset({"127.0.0.1"})


def missing_requirements() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    from .build import load_build

    if load_build() is None:
        return "no web build: run scripts/build-web (python -m synced_store.web.build)"
    return None


class WebServer:
    """A server with the web page in a subprocess on a free 127.0.0.1 port.

    ``module_args``: what follows ``python -m``, with ``{port}`` and ``{data_dir}`` filled in.
    :meth:`demo` runs ``synced-store demo NAME`` (``python -m synced_store.cli``);
    :meth:`app` serves any app module with ``python -m synced_store.web.serve``.
    """

    def __init__(
        self,
        module_args: list[str],
        data_dir: str | Path,
        *,
        pythonpath: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.args = [a.format(port=self.port, data_dir=self.data_dir) for a in module_args]
        self.pythonpath = pythonpath or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def demo(
        cls,
        name: str,
        data_dir: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> WebServer:
        """``synced-store demo NAME --host 127.0.0.1 --port P --data-dir D ARGS...`` (a demo
        registered by an installed package: ``chat`` for the example chat app)."""
        return cls(
            [
                "synced_store.cli",
                "demo",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--data-dir",
                "{data_dir}",
                *args,
            ],
            data_dir,
            env=env,
        )

    @classmethod
    def app(cls, app_module: str, data_dir: str | Path, **kwargs: Any) -> WebServer:
        """``python -m synced_store.web.serve APP_MODULE``."""
        return cls(
            ["synced_store.web.serve", app_module, "--port", "{port}", "--data-dir", "{data_dir}"],
            data_dir,
            **kwargs,
        )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> WebServer:
        """Start and wait (bounded) until ``/healthz`` answers."""
        env = dict(os.environ)
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [*self.pythonpath, env.get("PYTHONPATH", "")] if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args], env=env, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"web server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("web server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the server (and wait for it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_chromium(p: Playwright, **kwargs: Any) -> Browser:
    """Launch the system Chromium headless with networking side channels off."""
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, **kwargs)


class NetworkGuard:
    """Routes every request of a context: local ones continue, others are aborted and recorded.

    Also records WebSocket URLs (routes do not see WebSockets) and every URL requested.
    """

    def __init__(self, context: BrowserContext) -> None:
        self.blocked: list[str] = []
        self.requests: list[str] = []
        self.websockets: list[str] = []
        context.route("**/*", self._route)
        context.on("page", self._watch_page)
        for page in context.pages:
            self._watch_page(page)

    def _watch_page(self, page: Any) -> None:
        page.on("websocket", lambda ws: self._on_ws(ws.url))

    def _on_ws(self, url: str) -> None:
        self.websockets.append(url)
        if urlsplit(url).hostname not in LOCAL_HOSTS:
            self.blocked.append(url)

    def _route(self, route: Route) -> None:
        url = route.request.url
        self.requests.append(url)
        scheme = urlsplit(url).scheme
        if scheme in ("data", "blob") or urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("blockedbyclient")

    def off_machine(self) -> list[str]:
        """URLs that tried to leave the machine (requests and WebSockets)."""
        return list(self.blocked)
