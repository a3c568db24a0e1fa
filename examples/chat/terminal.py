"""The terminal chat client behind ``synced-store chat``: a live view of a room on a terminal,
a transcript when piped.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from synced_store import SyncedStoreError
from synced_store.types import ConnectionStatus

from .lobby import LOBBY
from .schema import parse_mention

__all__ = ["ChatView", "run_chat_client"]

_STATUS_MARK = {"incomplete": "…", "complete": "✓", "error": "✗ error", "cancelled": "⊘ cancelled"}


class ChatView:
    """Renders the room: every message in key order, bot replies with their status."""

    def __init__(self, user: str, room: str, *, limit: int = 40) -> None:
        self.user = user
        self.room = room
        self.limit = limit
        self.messages: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set()
        self.status: str = ConnectionStatus.CONNECTING
        #: Display names by user id, from the room's ``$user_info`` system table.
        self.names: dict[str, str] = {}

    def update_names(self, entries: list[tuple[Any, Any]]) -> None:
        """Replace the display names with a ``$user_info`` snapshot."""
        self.names = {k.item_key: v.get("display_name") or k.item_key for k, v in entries}

    def update(self, entries: list[tuple[Any, Any]]) -> None:
        """Replace the messages with a table snapshot."""
        self.messages = {k.item_key: v for k, v in entries}
        self.seen.update(self.messages)

    def line(self, m: dict[str, Any]) -> Text:
        """One message as a styled line."""
        bot = m.get("role") == "assistant"
        sender = m.get("senderId", "?")
        name = Text(
            f"{sender if bot else self.names.get(sender, sender)}: ",
            style="bold magenta"
            if bot
            else ("bold green" if m.get("senderId") == self.user else "bold cyan"),
        )
        body = Text(m.get("text", ""))
        out = name + body
        status = m.get("status")
        if bot and status:
            style = {"complete": "dim green", "error": "bold red"}.get(status, "yellow")
            out += Text(f"  {_STATUS_MARK.get(status, status)}", style=style)
        return out

    def render(self) -> Group:
        """The whole view (for the live display)."""
        rows = [self.line(m) for m in list(self.messages.values())[-self.limit :]]
        footer = Text(
            f"[{self.room} · {self.user} · {self.status}] type a message, "
            "'@bot …' to ask the bot, /name NAME, /search words, /older, /rooms, /cancel, /quit",
            style="dim",
        )
        return Group(*rows, footer)


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line.rstrip("\n")


async def run_chat_client(
    url: str,
    room: str,
    user: str,
    *,
    lines: AsyncIterator[str] | None = None,
    console: Console | None = None,
    idle_timeout: float = 120.0,
) -> int:
    """Chat in ``room`` as ``user`` until /quit or end of input; returns an exit status.

    On a terminal the room is a live view; otherwise (piped) each message is printed once,
    when it is final, so the output is a readable transcript. At end of input the client waits
    (up to ``idle_timeout``) for its mutations to sync and the bot replies it asked for.
    """
    from synced_store.client import connect

    from .app import backend  # its mutators run here too; its bot service only on the server

    console = console or Console()
    store = await connect(url, backend, instance_id=room, token=user, user_id=user)
    view = ChatView(user, room)
    live = console.is_terminal
    printed: set[str] = set()
    asked: set[str] = set()

    def transcript() -> None:
        for key, m in view.messages.items():
            final = m.get("role") == "user" or m.get("status") != "incomplete"
            if final and key not in printed:
                printed.add(key)
                console.print(view.line(m))

    display = Live(view.render(), console=console, auto_refresh=False, transient=False)

    def on_change(entries: list[tuple[Any, Any]], changes: dict[str, list[str]]) -> None:
        view.update(entries)
        if live:
            display.update(view.render(), refresh=True)
        else:
            transcript()

    def on_status(status: str) -> None:
        view.status = status
        if live:
            display.update(view.render(), refresh=True)

    def on_names(entries: list[tuple[Any, Any]], changes: dict[str, list[str]]) -> None:
        view.update_names(entries)
        if live:
            display.update(view.render(), refresh=True)

    store.on_connection_status(on_status)
    unsubscribe = store.subscribe_to_table("messages", on_change)
    unsubscribe_names = store.subscribe_to_table("$user_info", on_names)
    try:
        with display if live else contextlib.nullcontext():
            async for text in lines or _stdin_lines():
                text = text.strip()
                if not text:
                    continue
                if text == "/quit":
                    return 0
                if text == "/rooms":  # the lobby's list, over a read-only second connection
                    console.print(await _rooms(store))
                    continue
                try:
                    if text.startswith("/name "):  # an action: it needs the server
                        await store.wait_until(lambda: store.is_online, timeout=idle_timeout)
                        await store.action.setDisplayName(name=text[6:].strip())
                        continue
                    if text.startswith("/search"):
                        await _search(store, console, text.removeprefix("/search"))
                        continue
                    if text == "/older":  # the room's history, 50 messages further back
                        await store.wait_for_server_data(idle_timeout)
                        added = await store.load_older("messages", limit=50)
                        view.limit += added
                        if not added:
                            console.print("[dim]no older messages[/dim]")
                        continue
                    if text == "/cancel":
                        for key, m in reversed(view.messages.items()):
                            # Only a reply this user asked for can be stopped by them.
                            if m.get("status") == "incomplete" and (
                                m.get("requestedBy") == store.user_id or key in asked
                            ):
                                await store.mutate.cancelMessage(id=key)
                                break
                        continue
                    await _send(store, text, asked)
                except SyncedStoreError as exc:  # refused by the app's rules, locally
                    console.print(f"[red]refused:[/red] {exc}")
            await _wait_idle(store, view, asked, idle_timeout)
        return 0
    except TimeoutError:
        console.print("[red]timed out waiting for the server[/red]")
        return 1
    finally:
        unsubscribe()
        unsubscribe_names()
        await store.close()


async def _rooms(store: Any, timeout: float = 10.0) -> str:
    """The rooms the lobby lists (``store.external_store(LOBBY)``), one per line."""
    lobby = await store.external_store(LOBBY)
    await lobby.wait_for_server_data(timeout)
    rows = await lobby.query(lambda ctx: ctx.table("rooms").values())
    lines = [f"{r['id']}  (by {r['createdBy']})" for r in rows]
    return "\n".join(["rooms:", *lines]) if lines else "rooms: none yet"


async def _search(store: Any, console: Console, query: str) -> None:
    """``/search words``: print the room's messages holding every word (searched on the
    server over what this user may see; the best matches first)."""
    await store.wait_for_sync()  # what this client sent is searchable once confirmed
    hits = await store.search("messages", query, limit=10)
    console.print(f"[bold]{len(hits)} message(s) match {query.strip()!r}[/bold]")
    for h in hits:
        m = h["value"]
        console.print(f"  {m.get('senderId', '?')}: {m.get('text', '')}")


async def _send(store: Any, text: str, asked: set[str]) -> None:
    """Send ``text``; a message that starts with ``@name `` also gets a reply id."""
    # Ids sort by time (then by client), so every client lists the room in sending order.
    prefix = f"{time.time_ns() // 1_000_000:013d}"
    msg_id = f"{prefix}-{await store.make_unique_id()}"
    args: dict[str, Any] = {"id": msg_id, "text": text}
    if text.startswith("@"):
        args["botMessageId"] = f"{prefix}-{await store.make_unique_id()}"
        if parse_mention(text) is not None:
            asked.add(args["botMessageId"])
    await store.mutate.sendMessage(args)


async def _wait_idle(store: Any, view: ChatView, asked: set[str], timeout: float) -> None:
    """Wait until our mutations are confirmed and every reply we asked for is final."""

    def idle() -> bool:
        if store.pending_count:
            return False
        for key in asked:
            m = view.messages.get(key)
            if m is None and key not in view.seen:
                return False  # not rendered yet
            if m is not None and m.get("status") == "incomplete":
                return False
        return True

    await store.wait_until(idle, timeout=timeout)
