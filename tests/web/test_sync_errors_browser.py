"""The page reconnects when the server asks it to push again, or sends a frame out of sequence.

Before Pyodide is ready (``?nopy`` keeps it off) the shell decodes frames with protocol.js;
once the engine runs it gets them raw. Either way, a ``mutation_id_gap`` or ``storage_busy``
error makes the page reconnect and push its pending mutations again, and a poke that does not
continue from the page's cookie makes it reconnect and catch up, applying nothing of it. The
page's sync sockets go through a route that can hold back a push and inject frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = [pytest.mark.browser]


def expect() -> Any:
    from playwright.sync_api import expect as _expect

    return _expect


def send(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def message(page: Any, text: str) -> Any:
    return page.locator("#messages li", has_text=text)


class Wire:
    """The page's sync connections, through a route: what the page pushed on each, a way to
    refuse the next push with an error frame, and to send the page a frame of our own."""

    def __init__(self, page: Any) -> None:
        self.sockets: list[Any] = []
        self.pushes: list[tuple[int, list[int]]] = []
        self.refuse_next_push: str | None = None
        #: Rewrite the last_mutation_id of the next ``connected`` to this value.
        self.forget_history: int | None = None
        page.route_web_socket("**/sync/**", self._route)

    def _route(self, ws: Any) -> None:
        n = len(self.sockets)
        self.sockets.append(ws)
        server = ws.connect_to_server()

        def to_server(msg: str | bytes) -> None:
            frame = json.loads(msg)
            if frame.get("type") == "push":
                self.pushes.append((n, [m["id"] for m in frame["mutations"]]))
                if self.refuse_next_push is not None:
                    kind, self.refuse_next_push = self.refuse_next_push, None
                    error = {"type": "error", "kind": kind, "message": "test: push again"}
                    ws.send(json.dumps(error))  # the server never sees this push
                    return
            server.send(msg)

        def to_page(msg: str | bytes) -> None:
            if self.forget_history is not None and '"connected"' in str(msg):
                frame = json.loads(msg)
                frame["last_mutation_id"], self.forget_history = self.forget_history, None
                msg = json.dumps(frame)
            ws.send(msg)

        ws.on_message(to_server)
        server.on_message(to_page)

    def send_to_page(self, frame: Any) -> None:
        self.sockets[-1].send(json.dumps(frame))


def reconnect_through(page: Any, wire: Wire) -> None:
    """Make the page open a new connection (through the route) and wait until it is up."""
    page.evaluate("""() => { window.__up = new Promise((resolve) => {
      const off = chat.store.on("status", (s) => { if (s === "connected") { off(); resolve(); } });
    }); }""")
    page.evaluate("chat.store._ws.close(4999, 'test: reconnect through the route')")
    page.evaluate("window.__up")
    assert len(wire.sockets) == 1


@pytest.mark.parametrize(
    ("engine", "kind"),
    [(False, "mutation_id_gap"), (False, "storage_busy"), (True, "mutation_id_gap"),
     (True, "storage_busy")],
)  # fmt: skip
def test_a_refused_push_makes_the_page_reconnect_and_push_again(
    open_chat: Callable[..., Any], engine: bool, kind: str
) -> None:
    alice = open_chat("alice", engine=engine)
    bob = open_chat("bob", engine=False)
    wire = Wire(alice)
    reconnect_through(alice, wire)
    wire.refuse_next_push = kind
    text = f"pushed twice after {kind} ({'engine' if engine else 'shell'})"
    send(alice, text)
    expect()(message(bob, text)).to_be_visible()
    expect()(message(alice, text)).to_have_attribute("data-pending", "false")
    assert len(wire.sockets) == 2, "the page did not reconnect"
    [(first, ids), (second, again)] = wire.pushes
    assert (first, second) == (0, 1)
    assert ids == again  # the same mutation, pushed again on the new connection
    assert alice.evaluate("chat.store.pending.length") == 0
    assert alice.evaluate("chat.store.optimistic") is engine
    expect()(alice.locator("#status")).to_have_attribute("data-status", "connected")


@pytest.mark.parametrize("engine", [False, True])
@pytest.mark.parametrize("frame", ["poke", "append"])
def test_an_out_of_sequence_frame_makes_the_page_reconnect(
    open_chat: Callable[..., Any], engine: bool, frame: str
) -> None:
    alice = open_chat("alice", engine=engine)
    bob = open_chat("bob", engine=False)
    send(bob, "before the bad frame")
    expect()(message(alice, "before the bad frame")).to_have_attribute("data-pending", "false")
    wire = Wire(alice)
    reconnect_through(alice, wire)
    cookie = alice.evaluate("chat.store.cookie")
    bogus = {"id": "bogus", "text": "never shown", "role": "user", "senderId": "mallory"}
    if frame == "poke":
        # A poke that does not continue from the page's cookie (one was lost on the way).
        wire.send_to_page(
            {
                "type": "poke",
                "base_cookie": cookie + 7,
                "cookie": cookie + 8,
                "patch": [{"op": "set", "t": "messages", "k": "bogus", "v": bogus}],
                "bind": [[0, "", "messages", "bogus", "text", ""]],
            }
        )
    else:
        # An append frame whose check digit is not the page's cookie % 10, for a row it has.
        row = message(alice, "before the bad frame").get_attribute("data-id")
        wire.send_to_page(
            {
                "type": "poke",
                "base_cookie": cookie,
                "cookie": cookie,
                "patch": [],
                "bind": [[0, "", "messages", row, "text", ""]],
            }
        )
        wire.send_to_page([(cookie + 3) % 10, 1, 0, " never shown"])
    expect()(alice.locator("#status")).to_have_attribute("data-status", "connected")
    send(bob, "after the bad frame")
    expect()(message(alice, "after the bad frame")).to_have_attribute("data-pending", "false")
    assert len(wire.sockets) == 2, "the page did not reconnect"
    assert message(alice, "never shown").count() == 0
    assert alice.evaluate("chat.store.cookie") > cookie
    assert alice.evaluate("chat.store.rows.has(JSON.stringify(['', 'messages', 'bogus']))") is False
    assert alice.evaluate("chat.store.optimistic") is engine


@pytest.mark.parametrize("engine", [False, True])
def test_a_server_that_lost_the_client_s_history_makes_the_page_start_over(
    open_chat: Callable[..., Any], engine: bool
) -> None:
    alice = open_chat("alice", engine=engine)
    bob = open_chat("bob", engine=False)
    send(alice, "confirmed before")
    expect()(message(alice, "confirmed before")).to_have_attribute("data-pending", "false")
    old_client = alice.evaluate("chat.store.clientId")
    assert alice.evaluate("chat.store.lastMutationId") == 1
    wire = Wire(alice)
    alice.evaluate("chat.store.setNetworkEnabled(false)")
    expect()(alice.locator("#status")).not_to_have_attribute("data-status", "connected")
    send(alice, "pending across the restore")
    mine = message(alice, "pending across the restore")
    expect()(mine).to_have_attribute("data-pending", "true")
    assert alice.evaluate("chat.store.pending.map((m) => m.id)") == [2]
    # The server answers as if restored from a backup taken before the first mutation.
    wire.forget_history = 0
    alice.evaluate("chat.store.setNetworkEnabled(true)")
    expect()(message(bob, "pending across the restore")).to_have_count(1)
    expect()(mine).to_have_attribute("data-pending", "false")
    assert len(wire.sockets) == 2  # refused history, then the new client
    assert alice.evaluate("chat.store.clientId") != old_client
    [(_, ids)] = wire.pushes
    assert ids == [1]  # renumbered from 1 under the new client id
    assert message(bob, "confirmed before").count() == 1
