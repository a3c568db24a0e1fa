"""The browser shell reconnects with a growing backoff after 1008 and 1013.

The server closes with 1008 (over a rate limit, too slow to read) and 1013 (at capacity) to
mean "come back later". Those are not terminal: the shell reconnects, but waits at least a
second and keeps doubling the wait while the server keeps turning it away — even when each
connection got as far as ``connected`` (which resets the backoff after any other close).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.browser]


def expect() -> Any:
    from playwright.sync_api import expect as _expect

    return _expect


def turn_away(page: Any, code: int, times: int, *, after_connected: bool) -> list[float]:
    """Route the page's sync sockets: the first ``times`` connections are closed with ``code``
    (right away, or once the server's ``connected`` reached the page); later ones pass.
    Returns the (growing) list of the connection attempts' times."""
    attempts: list[float] = []
    lock = threading.Lock()

    def route(ws: Any) -> None:
        with lock:
            attempts.append(time.monotonic())
            n = len(attempts)
        if n > times:
            ws.connect_to_server()
            return
        if not after_connected:
            ws.close(code=code, reason="test: come back later")
            return
        server = ws.connect_to_server()

        def to_page(msg: str | bytes) -> None:
            ws.send(msg)
            if isinstance(msg, str) and '"type":"connected"' in msg.replace(" ", ""):
                ws.close(code=code, reason="test: over the limit")

        server.on_message(to_page)

    page.route_web_socket("**/sync/**", route)
    return attempts


@pytest.mark.parametrize(("code", "after_connected"), [(1013, False), (1008, True)])
def test_shell_backs_off_after_retry_later_closes(
    open_chat: Callable[..., Any], code: int, after_connected: bool
) -> None:
    page = open_chat("rita", engine=False)
    attempts = turn_away(page, code, 3, after_connected=after_connected)
    # Resolves when the connection that is let through is up (each turned-away connection
    # also got to "connected" when the close came after the handshake).
    page.evaluate(
        """(n) => { window.__up = new Promise((resolve) => {
          let k = 0;
          chat.store.on("status", (s) => { if (s === "connected" && ++k === n) resolve(); });
        }); }""",
        4 if after_connected else 1,
    )
    page.evaluate("chat.store._ws.close(4999, 'test: reconnect through the route')")
    page.evaluate("window.__up")
    expect()(page.locator("#status")).to_have_attribute("data-status", "connected")
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # At least 1 s (x 0.75..1.25 jitter) after the first refusal, then doubling: 2 s, 4 s
    # (capped at reconnectMax, 3 s by default). Without the rule these were 0.1 s apart.
    assert gaps[0] >= 0.7, gaps
    assert gaps[1] >= 1.4, gaps
    assert gaps[2] >= 2.2, gaps
    assert page.evaluate("chat.store.endReason") is None
