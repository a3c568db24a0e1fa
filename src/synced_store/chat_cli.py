"""The chat demo's commands: ``synced-store demo chat`` (server) and ``synced-store chat``
(a rich terminal client).

``demo`` and ``chat`` are click objects; ``synced_store.cli`` registers them. Also runnable alone:
``python -m synced_store.chat_cli demo chat`` / ``python -m synced_store.chat_cli chat ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from .errors import SyncedStoreError
from .schema import BackendConfig

__all__ = ["ChatView", "chat", "demo", "load_chat_app", "run_chat_client"]

log = logging.getLogger("synced_store.chat")
_REPO_ROOT = Path(__file__).resolve().parents[2]
_STATUS_MARK = {"incomplete": "…", "complete": "✓", "error": "✗ error", "cancelled": "⊘ cancelled"}
_PLACEHOLDER_PAGE = """<!doctype html><meta charset="utf-8"><title>synced-store chat</title>
<h1>synced-store chat</h1><p>The browser client is not installed in this build.
Connect a terminal client instead:</p>
<pre>synced-store chat --url ws://{host}:{port} --room lobby --user alice</pre>
<p>Sync endpoint: <code>ws://{host}:{port}/sync/&lt;room&gt;</code></p>"""


def load_chat_app() -> ModuleType:
    """Import ``examples.chat.app`` (adding the source checkout to ``sys.path`` if needed)."""
    try:
        return importlib.import_module("examples.chat.app")
    except ImportError:
        if not (_REPO_ROOT / "examples" / "chat" / "app.py").is_file():
            raise
        sys.path.insert(0, str(_REPO_ROOT))
        sys.modules.pop("examples", None)
        return importlib.import_module("examples.chat.app")


def _chat_backend(
    provider: str | None = None, pace: float | None = None, words: int | None = None
) -> tuple[BackendConfig, str]:
    from .bot import BotConfig

    bot = BotConfig.from_env(provider=provider, pace=pace, words=words)
    backend: BackendConfig = load_chat_app().make_backend(bot)
    return backend, bot.describe()


def _page_routes(backend: BackendConfig, host: str, port: int) -> list[Any]:
    """The browser client's routes if ``synced_store.web.routes`` exists, else a placeholder."""
    try:
        web = importlib.import_module("synced_store.web")
    except ImportError:
        web = None
    make_routes = getattr(web, "routes", None)
    if callable(make_routes):
        try:
            return list(make_routes("examples.chat", backend=backend))
        except Exception as exc:
            log.warning("the web client failed to load (%s); serving a placeholder page", exc)
    from starlette.requests import Request
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    page = _PLACEHOLDER_PAGE.format(host=host, port=port)

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return [Route("/", index)]


# -- synced-store demo chat ------------------------------------------------------------------


@click.group()
def demo() -> None:
    """Run a demo app on the embedded SQLite default.

    \b
    Example:
      synced-store demo chat --port 8000
    """


@demo.command("chat")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port (0 picks a free one).",
)
@click.option(
    "--data-dir",
    default="./data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the room databases (one <room>.sqlite3 each).",
)
@click.option(
    "--provider",
    type=click.Choice(["local", "openai"]),
    default=None,
    help="Bot provider [env SYNCED_STORE_BOT_PROVIDER; default: local, offline]. "
    "openai uses OPENAI_BASE_URL, OPENAI_API_KEY and OPENAI_MODEL.",
)
@click.option(
    "--bot-pace",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds per word of the local bot [env SYNCED_STORE_BOT_PACE; 0.05].",
)
@click.option(
    "--bot-words",
    type=click.IntRange(min=1),
    default=None,
    help="Words per reply of the local bot [env SYNCED_STORE_BOT_WORDS; 60].",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def demo_chat(
    host: str,
    port: int,
    data_dir: Path,
    provider: str | None,
    bot_pace: float | None,
    bot_words: int | None,
    log_level: str,
    max_connections: int | None,
    max_message_bytes: int | None,
    header_timeout: float | None,
    keep_alive_timeout: float | None,
    allowed_origins: tuple[str, ...],
) -> None:
    """Run the chat-with-bot demo: the server, the web page at /, and the bot.

    Mention the bot at the start of a message ("@bot tell me a story") and its reply streams
    into the room. One room is one SQLite database under --data-dir.

    \b
    Example:
      synced-store demo chat --port 8000 --bot-pace 0.05
      synced-store chat --url ws://127.0.0.1:8000 --room lobby --user alice
    """
    from .cli.serving import display_host, limits_from_options, run_server
    from .server import create_app

    limits = limits_from_options(
        max_connections=max_connections,
        max_message_bytes=max_message_bytes,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
    )
    backend, bot_desc = _chat_backend(provider, bot_pace, bot_words)
    bound = {"port": port}

    def banner(actual_port: int) -> None:
        bound["port"] = actual_port
        shown = display_host(host)
        click.echo(f"synced-store chat demo: http://{shown}:{actual_port}/")
        click.echo(f"  sync endpoint:   ws://{shown}:{actual_port}/sync/<room>")
        click.echo(
            f"  terminal client: synced-store chat --url ws://{shown}:{actual_port} "
            "--room lobby --user alice"
        )
        click.echo(f"  bot:             {bot_desc}")
        click.echo(f"  data:            {data_dir.resolve()}")

    def make_app() -> Any:
        return create_app(
            backend,
            data_dir=data_dir,
            routes=_page_routes(backend, host, bound["port"]),
            limits=limits,
            allowed_origins=allowed_origins,
        )

    run_server(make_app, host=host, port=port, log_level=log_level, banner=banner, limits=limits)


# -- synced-store chat -----------------------------------------------------------------------


class ChatView:
    """Renders the room: every message in key order, bot replies with their status."""

    def __init__(self, user: str, room: str, *, limit: int = 40) -> None:
        self.user = user
        self.room = room
        self.limit = limit
        self.messages: dict[str, dict[str, Any]] = {}
        self.seen: set[str] = set()
        self.status = "connecting"

    def update(self, entries: list[tuple[Any, Any]]) -> None:
        """Replace the messages with a table snapshot."""
        self.messages = {k.item_key: v for k, v in entries}
        self.seen.update(self.messages)

    def line(self, m: dict[str, Any]) -> Text:
        """One message as a styled line."""
        bot = m.get("role") == "assistant"
        name = Text(
            f"{m.get('senderId', '?')}: ",
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
            "'@bot …' to ask the bot, /cancel, /quit",
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
    from .client import connect

    console = console or Console()
    backend: BackendConfig = load_chat_app().backend  # the example's, bot from the environment
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

    store.on_connection_status(on_status)
    unsubscribe = store.subscribe_to_table("messages", on_change)
    try:
        with display if live else contextlib.nullcontext():
            async for text in lines or _stdin_lines():
                text = text.strip()
                if not text:
                    continue
                if text == "/quit":
                    return 0
                try:
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
        await store.close()


async def _send(store: Any, text: str, asked: set[str]) -> None:
    """Send ``text``; a message that starts with ``@name `` also gets a reply id."""
    # Ids sort by time (then by client), so every client lists the room in sending order.
    prefix = f"{time.time_ns() // 1_000_000:013d}"
    msg_id = f"{prefix}-{await store.make_unique_id()}"
    args: dict[str, Any] = {"id": msg_id, "text": text}
    if text.startswith("@"):
        args["botMessageId"] = f"{prefix}-{await store.make_unique_id()}"
        load_chat_app()  # makes examples.chat importable
        if importlib.import_module("examples.chat.schema").parse_mention(text) is not None:
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


@click.command()
@click.option(
    "--url", default="ws://127.0.0.1:8000", show_default=True, help="The server's base URL."
)
@click.option("--room", default="lobby", show_default=True, help="The room (instance id).")
@click.option("--user", required=True, help="Your user name (the development token).")
@click.option(
    "--idle-timeout",
    default=120.0,
    show_default=True,
    type=float,
    help="At end of input, wait this long for pending messages and bot replies.",
)
def chat(url: str, room: str, user: str, idle_timeout: float) -> None:
    """Chat in a room from the terminal and watch bot replies stream.

    Type a line and press Enter to send it; start it with "@bot " to ask the bot. /cancel stops
    the reply that is streaming, /quit leaves. Input can be piped; the client then prints a
    transcript and exits once the bot replies it asked for are final.

    \b
    Example:
      synced-store chat --url ws://127.0.0.1:8000 --room lobby --user alice
      echo "@bot tell me a story" | synced-store chat --room lobby --user bob
    """
    logging.basicConfig(level=logging.ERROR)
    status = asyncio.run(run_chat_client(url, room, user, idle_timeout=idle_timeout))
    raise SystemExit(status)


def _main() -> None:
    group = click.Group(
        "synced-store",
        commands={"demo": demo, "chat": chat},
        help="The chat demo's commands (also in `synced-store`).",
    )
    group.main(prog_name="synced-store")


# `demo chat`'s limit and origin options. Imported last: synced_store.cli imports this module,
# and cli.serving belongs to that package (here `chat` and `demo` exist already).
from .cli.serving import connection_params  # noqa: E402

demo_chat.params.extend(connection_params())


if __name__ == "__main__":
    _main()
