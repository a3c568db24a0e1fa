"""Take ``docs/chat-screenshot.png``: the chat page while a bot reply streams in.

``python -m examples.chat.screenshot [--out docs/chat-screenshot.png]`` (from the repository root)

Starts ``synced-store demo chat`` on a free port, lets two people (two browser contexts) talk
in one room, asks ``@bot`` and captures the first person's page halfway through the reply.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

__all__ = ["main", "take"]

CONVERSATION = [
    ("alice", "Hi Bob! Did the sync engine survive the train tunnel this morning?"),
    ("bob", "It did: I typed three messages offline and they went out when I came back."),
    ("alice", "Nice. Let's ask the bot for a story while the build runs."),
]
PROMPT = "@bot tell me a short story about a lighthouse that keeps ships in sync"


def take(out: Path, *, width: int = 1100, height: int = 720) -> Path:
    """Write the screenshot to ``out``; returns it."""
    from playwright.sync_api import expect, sync_playwright

    from synced_store.web.testing import NetworkGuard, WebServer, launch_chromium

    room = "lobby"
    with (
        tempfile.TemporaryDirectory() as tmp,
        WebServer.demo(
            "chat", Path(tmp) / "data", "--bot-pace", "0.12", "--bot-words", "60"
        ) as server,
        sync_playwright() as p,
    ):
        browser = launch_chromium(p)
        pages = {}
        guards = []
        for user in ("alice", "bob"):
            ctx = browser.new_context(
                viewport={"width": width, "height": height}, device_scale_factor=1
            )
            guards.append(NetworkGuard(ctx))
            page = ctx.new_page()
            page.goto(f"{server.base_url}/?room={room}&user={user}")
            page.wait_for_selector("body[data-mode=optimistic]", timeout=120_000)
            pages[user] = page
        for user, text in CONVERSATION:
            pages[user].fill("#text", text)
            pages[user].press("#text", "Enter")
            expect(pages["alice"].locator("#messages li", has_text=text)).to_have_attribute(
                "data-pending", "false"
            )
        alice = pages["alice"]
        alice.fill("#text", PROMPT)
        alice.press("#text", "Enter")
        # Halfway through the reply: 25+ words streamed, still incomplete.
        alice.wait_for_function(
            "() => { const li = document.querySelector('#messages li[data-role=assistant]');"
            " return li && li.dataset.status === 'incomplete' &&"
            " li.querySelector('.bubble').textContent.split(' ').length > 25; }",
            timeout=60_000,
        )
        alice.fill("#text", "@bot can you also")
        out.parent.mkdir(parents=True, exist_ok=True)
        alice.screenshot(path=str(out))
        blocked = [u for g in guards for u in g.off_machine()]
        browser.close()
    if blocked:
        raise RuntimeError(f"requests left the machine: {blocked}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m examples.chat.screenshot")
    parser.add_argument("--out", type=Path, default=Path("docs/chat-screenshot.png"))
    args = parser.parse_args(argv)
    print(take(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
