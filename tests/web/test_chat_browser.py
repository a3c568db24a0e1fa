"""The chat page in real headless Chromium against ``synced-store demo chat``.

Two people (two isolated browser contexts) in one room; the Python mutators run in the page
(Pyodide); every request is checked to stay on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from synced_store.web.testing import WebServer, free_port

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

RECORDER = """() => {
  window.__rec = [];
  const seen = () => {
    for (const li of document.querySelectorAll('#messages li[data-role=assistant]')) {
      window.__rec.push([li.dataset.status, li.querySelector('.bubble').textContent.length]);
    }
  };
  new MutationObserver(seen).observe(document.getElementById('messages'),
    {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def expect() -> Any:
    from playwright.sync_api import expect as _expect

    return _expect


def send(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def message(page: Any, text: str) -> Any:
    return page.locator("#messages li", has_text=text)


def test_two_pages_see_each_other(open_chat: Callable[..., Any]) -> None:
    alice = open_chat("alice")
    bob = open_chat("bob")
    send(alice, "hello from alice")
    expect()(message(bob, "hello from alice")).to_be_visible()
    expect()(message(alice, "hello from alice")).to_have_attribute("data-pending", "false")
    send(bob, "hi alice, bob here")
    expect()(message(alice, "hi alice, bob here")).to_be_visible()
    expect()(message(alice, "hi alice, bob here").locator(".who")).to_have_text("bob")
    expect()(message(bob, "hi alice, bob here").locator(".who")).to_have_text("bob (you)")
    for page in (alice, bob):
        expect()(page.locator("#status")).to_have_attribute("data-status", "connected")
        assert page.locator("#messages li").count() == 2


def test_bot_reply_streams_into_both_pages(open_chat: Callable[..., Any]) -> None:
    alice = open_chat("alice")
    bob = open_chat("bob", engine=False)  # bob's page applies the streamed deltas in JS
    for page in (alice, bob):
        page.evaluate(RECORDER)
    send(alice, "@bot tell me a story")
    # The placeholder shows at once in the sender's page (optimistic), then streams.
    expect()(alice.locator("#messages li[data-role=assistant]")).to_have_count(1)
    for page in (alice, bob):
        done = page.locator("#messages li[data-role=assistant][data-status=complete]")
        expect()(done).to_have_count(1)
        rec = page.evaluate("window.__rec")
        final = len(done.locator(".bubble").text_content() or "")
        partial = {n for status, n in rec if status == "incomplete" and 0 < n < final}
        assert len(partial) >= 3, f"the reply did not visibly stream: {rec[:20]}"
    assert (
        alice.locator("#messages li[data-role=assistant] .bubble").text_content()
        == bob.locator("#messages li[data-role=assistant] .bubble").text_content()
    )


def test_offline_messages_show_at_once_and_sync_after_reconnect(
    open_chat: Callable[..., Any],
) -> None:
    alice = open_chat("alice")
    bob = open_chat("bob", engine=False)
    alice.context.set_offline(True)
    expect()(alice.locator("#status")).not_to_have_attribute("data-status", "connected")
    send(alice, "typed while offline")
    mine = message(alice, "typed while offline")
    # Shown at once by the Python mutator in the page, marked pending.
    expect()(mine).to_be_visible(timeout=1000)
    expect()(mine).to_have_attribute("data-pending", "true")
    send(alice, "@bot are you there")
    expect()(alice.locator("#messages li[data-role=assistant]")).to_have_count(1, timeout=1000)
    assert message(bob, "typed while offline").count() == 0
    alice.context.set_offline(False)
    expect()(alice.locator("#status")).to_have_attribute("data-status", "connected")
    expect()(mine).to_have_attribute("data-pending", "false")
    expect()(message(bob, "typed while offline")).to_be_visible()
    bot_done = bob.locator("#messages li[data-role=assistant][data-status=complete]")
    expect()(bot_done).to_have_count(1)


def test_reload_keeps_pending_mutations(
    open_chat: Callable[..., Any], chat_server: WebServer
) -> None:
    alice = open_chat("alice")
    blocked = {"on": True}

    def ws_route(ws: Any) -> None:
        if blocked["on"]:
            ws.close(code=1011, reason="test: server unreachable")
        else:
            ws.connect_to_server()

    alice.route_web_socket("**/sync/**", ws_route)
    alice.evaluate("chat.store.setNetworkEnabled(false)")
    expect()(alice.locator("#status")).not_to_have_attribute("data-status", "connected")
    send(alice, "survives a reload")
    expect()(message(alice, "survives a reload")).to_have_attribute("data-pending", "true")
    alice.evaluate("chat.store.persisted()")
    alice.reload()
    # Rendered from IndexedDB, first as a "sending" ghost, then re-applied by the engine.
    expect()(message(alice, "survives a reload")).to_be_visible()
    alice.wait_for_selector("body[data-mode=optimistic]")
    mine = message(alice, "survives a reload")
    expect()(mine).to_have_attribute("data-pending", "true")
    assert alice.evaluate("chat.store.pending.length") == 1
    assert alice.locator("#status").get_attribute("data-status") != "connected"
    blocked["on"] = False
    expect()(alice.locator("#status")).to_have_attribute("data-status", "connected")
    expect()(mine).to_have_attribute("data-pending", "false")
    bob = open_chat("bob", engine=False)
    expect()(message(bob, "survives a reload")).to_have_count(1)


def test_mutations_before_the_engine_is_ready_go_to_the_server(
    open_chat: Callable[..., Any],
) -> None:
    carol = open_chat("carol", engine=False)  # Pyodide never loads in this page
    bob = open_chat("bob")
    assert carol.evaluate("chat.store.optimistic") is False
    send(carol, "sent without python")
    expect()(message(bob, "sent without python")).to_be_visible()
    expect()(message(carol, "sent without python")).to_have_attribute("data-pending", "false")
    expect()(message(carol, "sent without python")).not_to_have_class("ghost")


def test_actions_run_on_the_server_with_and_without_the_engine(
    open_chat: Callable[..., Any],
) -> None:
    alice = open_chat("alice")  # calls through the Python engine
    carol = open_chat("carol", engine=False)  # the shell sends the action itself
    send(alice, "@bot hello")
    reply = alice.locator("#messages li[data-role=assistant][data-status=complete]")
    expect()(reply).to_have_count(1)
    reply_id = reply.get_attribute("data-id")
    text = reply.locator(".bubble").text_content()
    call = """(id) => chat.store.action("callBot", {botName: "bot", botMessageId: id})"""
    for page in (alice, carol):
        assert page.evaluate(call, reply_id) == {"success": True, "response": text}
        assert page.evaluate(call, "no-such-message") == {"success": False}
        err = page.evaluate(
            """() => chat.store.action("callBot", {botName: 5}).then(
                 () => null, (e) => e.message)"""
        )
        assert err is not None


def test_invalid_input_is_rejected_in_the_page(open_chat: Callable[..., Any]) -> None:
    alice = open_chat("alice")
    err = alice.evaluate("""async () => {
      try { await chat.store.mutate("sendMessage", {id: 5}); return null; }
      catch (e) { return e.message; }
    }""")
    assert err is not None
    assert "invalid" in err.lower()
    assert alice.evaluate("chat.store.pending.length") == 0


def test_no_request_leaves_the_machine(browsers: Any, chat_server: WebServer, room: str) -> None:
    page = browsers.new_page(f"{chat_server.base_url}/?room={room}&user=dave")
    page.wait_for_selector("body[data-mode=optimistic]")
    send(page, "@bot hello")
    expect()(page.locator("#messages li[data-status=complete]")).to_have_count(1)
    guard = browsers.guards[-1]
    assert guard.off_machine() == []
    base = chat_server.base_url + "/"
    assert all(u.startswith((base, "data:")) for u in guard.requests), guard.requests
    assert any("/pyodide/" in u and u.endswith("pyodide.asm.wasm") for u in guard.requests)
    assert any("/wheels/" in u and "/pydantic_core-" in u for u in guard.requests)
    assert guard.websockets
    assert all(u.startswith(f"ws://127.0.0.1:{chat_server.port}/sync/") for u in guard.websockets)
    # The page's CSP (connect-src 'self') refuses a request to another host before it is made.
    refused = page.evaluate(
        "fetch('https://cdn.jsdelivr.net/pyodide/').then(() => false, () => true)"
    )
    assert refused
    assert guard.off_machine() == []
    # And the guard is armed: a navigation to another host (no page CSP applies) is blocked.
    from playwright.sync_api import Error as PlaywrightError

    other = page.context.new_page()
    with pytest.raises(PlaywrightError):
        other.goto("https://cdn.jsdelivr.net/pyodide/")
    other.close()
    assert guard.off_machine() == ["https://cdn.jsdelivr.net/pyodide/"]
    guard.blocked.clear()


@pytest.fixture(scope="module")
def failing_bot_server(
    tmp_path_factory: pytest.TempPathFactory, _browser_requirements: None
) -> Any:
    """The chat demo whose bot provider (an OpenAI-compatible URL) refuses connections."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with WebServer.demo(
        "chat",
        tmp_path_factory.mktemp("failing"),
        *("--bot-pace", "0.05", "--bot-words", "40", "--provider", "openai"),
        env={"OPENAI_BASE_URL": dead, "OPENAI_API_KEY": "test"},
    ) as s:
        yield s


def test_failed_bot_reply_shows_its_error_state(
    browsers: Any, failing_bot_server: WebServer, room: str
) -> None:
    page = browsers.new_page(f"{failing_bot_server.base_url}/?room={room}&user=erin")
    page.wait_for_selector("body[data-mode=optimistic]")
    send(page, "@bot will you answer")
    failed = page.locator("#messages li[data-role=assistant][data-status=error]")
    expect()(failed).to_have_count(1)
    expect()(failed.locator(".error-note")).to_contain_text("failed")


def test_only_the_sender_may_delete_or_edit_a_message(open_chat: Callable[..., Any]) -> None:
    alice = open_chat("alice")
    bob = open_chat("bob")  # runs the mutators: refuses at once
    carol = open_chat("carol", engine=False)  # sends to the server, which refuses
    send(alice, "@bot say something")
    words = "@bot say something"
    mine = message(alice, words)
    expect()(mine).to_have_attribute("data-pending", "false")
    msg_id = mine.get_attribute("data-id")
    reply = alice.locator("#messages li[data-role=assistant][data-status=complete]")
    expect()(reply).to_have_count(1)
    reply_id = reply.get_attribute("data-id")
    for page in (bob, carol):
        expect()(page.locator(f'#messages li[data-id="{reply_id}"]')).to_have_attribute(
            "data-status", "complete"
        )
    # Only the owner's page offers to delete: the sender's message, the reply she asked for.
    expect()(mine.locator(".del")).to_be_visible()
    expect()(reply.locator(".del")).to_be_visible()
    for page in (bob, carol):
        for key in (msg_id, reply_id):
            expect()(page.locator(f'#messages li[data-id="{key}"] .del')).to_be_hidden()

    theirs = bob.locator(f'#messages li[data-id="{msg_id}"]')
    out = bob.evaluate("(id) => chat.deleteMessage(id)", msg_id)
    assert out["ok"] is False
    assert "only its sender (alice) may delete" in out["error"]
    expect()(theirs).to_have_attribute("data-refused", "true")
    expect()(theirs.locator(".refused-note")).to_contain_text("Delete refused")
    expect()(bob.locator("#toast")).to_contain_text("only its sender (alice) may delete")
    out = bob.evaluate("(id) => chat.editMessage(id, 'bob was here')", reply_id)
    assert out["ok"] is False
    assert "only the bot writes it" in out["error"]
    expect()(bob.locator(f'#messages li[data-id="{reply_id}"] .refused-note')).to_contain_text(
        "Edit refused"
    )
    assert bob.evaluate("chat.store.pending.length") == 0

    # The page without the engine learns it from the server; nothing changed meanwhile.
    kinds = carol.evaluate(
        """async ([mid, rid]) => {
          const out = [];
          for (const [name, args] of [["deleteMessage", {id: mid}],
                                      ["updateMessage", {id: mid, text: "carol was here",
                                                         status: "complete"}],
                                      ["cancelMessage", {id: rid}]]) {
            const r = await chat.store.mutate(name, args);
            try { await r.confirmed; out.push(null); } catch (e) { out.push(e.kind); }
          }
          return out;
        }""",
        [msg_id, reply_id],
    )
    assert kinds == ["permission_denied"] * 3
    on_carol = carol.locator(f'#messages li[data-id="{msg_id}"]')
    expect()(on_carol).to_have_attribute("data-refused", "true")
    expect()(on_carol.locator(".refused-note")).to_contain_text("Edit refused")
    expect()(carol.locator("#toast")).to_contain_text("refused")
    reply_text = reply.locator(".bubble").text_content()
    for page in (alice, bob, carol):
        row = page.locator(f'#messages li[data-id="{msg_id}"]')
        expect()(row.locator(".bubble")).to_have_text(words)
        expect()(page.locator(f'#messages li[data-id="{reply_id}"] .bubble')).to_have_text(
            reply_text or ""
        )

    # The owner deletes her own message with the button; every page sees it go.
    mine.locator(".del").click()
    reply.locator(".del").click()
    for page in (alice, bob, carol):
        expect()(page.locator("#messages li")).to_have_count(0)


def test_pages_show_display_names_from_user_info(open_chat: Callable[..., Any]) -> None:
    alice = open_chat("alice")
    bob = open_chat("bob", engine=False)  # the shell's own subscription path
    send(bob, "bob speaking")
    expect()(message(alice, "bob speaking").locator(".who")).to_have_text("bob")
    set_name = """(n) => chat.store.action("setDisplayName", {name: n})"""
    assert bob.evaluate(set_name, "Bob B.") == {"ok": True}
    expect()(message(alice, "bob speaking").locator(".who")).to_have_text("Bob B.")
    expect()(message(bob, "bob speaking").locator(".who")).to_have_text("Bob B. (you)")
    assert alice.evaluate(set_name, "Alice A.") == {"ok": True}
    send(alice, "alice here")
    expect()(message(bob, "alice here").locator(".who")).to_have_text("Alice A.")
