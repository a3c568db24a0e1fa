"""The chat page runs under the server's Content-Security-Policy in real headless Chromium
(issue 9, item 8): Pyodide starts, messages sync, and no CSP violation is reported — neither in
the page (``securitypolicyviolation`` events, console, DevTools issues) nor in the engine's
Web Worker (its console). Every response the page loads (the page, the static files, the
Pyodide runtime and wheels, the Python bundle) and ``/healthz`` carry the security headers.

A control run serves the page with a CSP lacking ``'wasm-unsafe-eval'``: the same detectors
must then report the violation, in the page and in the worker, or the clean run proves
nothing. This file is also that control server (``python -m tests.web.test_csp_browser``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from synced_store.server.web_security import DEFAULT_CSP
from synced_store.web.testing import NetworkGuard, WebServer

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
#: How Chromium words a CSP violation in the console (page and worker).
CSP_TEXT = re.compile(r"content.security.policy|refused to", re.IGNORECASE)
HEADERS = {
    "content-security-policy": DEFAULT_CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
WATCH_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI} in ${e.sourceFile}`);
});
"""


def expect() -> Any:
    from playwright.sync_api import expect as _expect

    return _expect


class CspWatch:
    """One browser context whose page and workers are watched for CSP violations."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1000, "height": 700})
        self.guard = NetworkGuard(self.context)
        self.context.add_init_script(WATCH_CSP)
        self.console: list[str] = []  # CSP messages, "page: ..." / "worker: ..."
        self.issues: list[str] = []
        self.errors: list[str] = []
        self.workers: list[str] = []
        self.responses: list[Any] = []
        self.context.on("response", lambda r: self.responses.append(r))
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self._console("page", m))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("worker", self._worker)
        cdp = self.context.new_cdp_session(self.page)
        cdp.on("Audits.issueAdded", self._issue)
        cdp.send("Audits.enable")

    def _console(self, where: str, message: Any) -> None:
        if CSP_TEXT.search(message.text):
            self.console.append(f"{where}: {message.text}")

    def _worker(self, worker: Any) -> None:
        # Registered as the worker appears, before any of its messages is delivered.
        self.workers.append(worker.url)
        worker.on("console", lambda m: self._console("worker", m))

    def _issue(self, event: dict[str, Any]) -> None:
        issue = event["issue"]
        if "ContentSecurityPolicy" in issue["code"]:
            self.issues.append(str(issue.get("details", issue)))

    def violations(self) -> list[str]:
        in_page = self.page.evaluate("window.__csp || []")
        return [*in_page, *self.console, *self.issues]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watch(browser: Any) -> Iterator[Callable[[], CspWatch]]:
    opened: list[CspWatch] = []

    def new() -> CspWatch:
        opened.append(CspWatch(browser))
        return opened[-1]

    yield new
    for w in opened:
        w.close()


def _send(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_the_chat_page_runs_pyodide_under_the_csp_without_violations(
    watch: Callable[[], CspWatch], chat_server: WebServer
) -> None:
    room = "t-csp-clean"
    alice, bob = watch(), watch()
    alice.page.goto(f"{chat_server.base_url}/?room={room}&user=alice")
    bob.page.goto(f"{chat_server.base_url}/?room={room}&user=bob&nopy=1")
    # Python (Pyodide, in the worker) started under the policy.
    alice.page.wait_for_selector("body[data-mode=optimistic]")
    expect()(alice.page.locator("#engine")).to_have_text("Python engine ready")
    assert any(u.endswith("/_ss/static/engine-worker.js") for u in alice.workers)
    # Messages sync both ways over the WebSocket (connect-src 'self').
    _send(alice.page, "hello under a strict CSP")
    expect()(bob.page.locator("#messages li", has_text="hello under a strict CSP")).to_be_visible()
    _send(bob.page, "bob answers")
    got = alice.page.locator("#messages li", has_text="bob answers")
    expect()(got).to_be_visible()
    mine = alice.page.locator("#messages li", has_text="hello under a strict CSP")
    expect()(mine).to_have_attribute("data-pending", "false")
    for w in (alice, bob):
        expect()(w.page.locator("#status")).to_have_attribute("data-status", "connected")
        assert w.violations() == [], w.violations()
        assert w.errors == []
        assert w.guard.off_machine() == []

    # Every response the pages loaded carries the headers: page, static, Pyodide, wheels.
    loaded = {r.url.split("?")[0]: r for w in (alice, bob) for r in w.responses}
    for part in (
        "/pyodide/",
        ".wasm",
        "pyodide.mjs",
        "/wheels/",
        "/_ss/py/",
        "/_ss/static/",
        "/_ss/app/",
    ):
        assert any(part in u for u in loaded), (part, sorted(loaded))
    for url, response in loaded.items():
        headers = response.all_headers()
        for name, value in HEADERS.items():
            assert headers.get(name) == value, (url, response.status, name, headers)


def test_every_kind_of_response_carries_the_security_headers(chat_server: WebServer) -> None:
    base = chat_server.base_url
    with httpx.Client(base_url=base) as http:
        page = http.get("/")
        urls = ["/", "/healthz", "/_ss/app/chat.js", "/_ss/static/engine-worker.js"]
        urls += ["/_ss/static/missing.js", "/no-such-page", "/_ss/py/stale.json"]
        wasm = re.search(r'"indexURL": "([^"]+)"', page.text)
        assert wasm is not None
        urls += [wasm.group(1) + "pyodide.asm.wasm", wasm.group(1) + "pyodide.mjs"]
        responses = [http.get(u) for u in urls]
        responses.append(http.get("/", headers={"If-None-Match": page.headers["etag"]}))
        assert responses[-1].status_code == 304
        for r in responses:
            for name, value in HEADERS.items():
                assert r.headers.get(name) == value, (r.url, r.status_code, name)


def test_the_detectors_see_a_violation_in_the_page_and_in_the_worker(
    watch: Callable[[], CspWatch], tmp_path: Path
) -> None:
    """The control: without 'wasm-unsafe-eval' Pyodide cannot start, and we must notice."""
    weak = DEFAULT_CSP.replace(" 'wasm-unsafe-eval'", "")
    args = ["tests.web.test_csp_browser", "--port", "{port}", "--data-dir", "{data_dir}"]
    with WebServer([*args, "--csp", weak], tmp_path, pythonpath=[str(REPO)]) as server:
        # The page compiles the wasm itself: refused in the page.
        w = watch()
        with w.page.expect_console_message(lambda m: bool(CSP_TEXT.search(m.text))):
            w.page.goto(f"{server.base_url}/?room=t-csp-weak&user=eve")
        w.page.wait_for_function("window.__csp.length > 0")
        assert any("wasm-eval" in v for v in w.violations()), w.violations()
        # The worker compiles it (?pagecompile=0): refused in the worker, seen there.
        w2 = watch()
        with w2.page.expect_console_message(lambda m: bool(CSP_TEXT.search(m.text))):
            w2.page.goto(f"{server.base_url}/?room=t-csp-weak&user=eve&pagecompile=0")
        assert any(v.startswith("worker: ") for v in w2.console), w2.console


def _serve_main() -> None:
    """The control server: the chat page under the CSP given with ``--csp``."""
    import argparse

    from examples.chat.app import make_backend

    from synced_store.bot import BotConfig
    from synced_store.cli import run_server
    from synced_store.server import create_app
    from synced_store.web import routes

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--csp", default=DEFAULT_CSP)
    args = p.parse_args()
    backend = make_backend(BotConfig.from_env(provider="local", words=5))
    run_server(
        lambda: create_app(
            backend,
            data_dir=args.data_dir,
            authenticate=lambda t: t or None,
            routes=routes("examples.chat", backend=backend),
            content_security_policy=args.csp,
        ),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )


if __name__ == "__main__":
    sys.exit(_serve_main())
