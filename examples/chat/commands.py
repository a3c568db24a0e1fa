"""The chat app's commands, registered with ``synced-store`` through entry points
(``pyproject.toml``)::

    synced-store demo chat    the server, the chat page at / and the bot (``demo_chat``)
    synced-store chat         a terminal client (``chat``)

Thin click layers: the work happens in :mod:`.app` (the backend), :func:`synced_store.web.routes`
(the page, from ``static/``), :func:`synced_store.cli.run_server` and :mod:`.terminal`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import click

from synced_store.cli import connection_options, display_host, limits_from_options, run_server

__all__ = ["chat", "demo_chat"]


@click.command("chat")
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
@connection_options
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
    from synced_store.bot import BotConfig
    from synced_store.server import create_app
    from synced_store.web import routes

    from .app import make_backend

    limits = limits_from_options(
        max_connections=max_connections,
        max_message_bytes=max_message_bytes,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
    )
    bot = BotConfig.from_env(provider=provider, pace=bot_pace, words=bot_words)
    backend = make_backend(bot, lobby=True)

    def banner(actual_port: int) -> None:
        base = f"{display_host(host)}:{actual_port}"
        click.echo(f"synced-store chat demo: http://{base}/")
        click.echo(f"  sync endpoint:   ws://{base}/sync/<room>")
        click.echo(
            f"  terminal client: synced-store chat --url ws://{base} --room lobby --user alice"
        )
        click.echo(f"  bot:             {bot.describe()}")
        click.echo(f"  data:            {data_dir.resolve()}")

    def make_app() -> Any:
        page = routes(__package__ or "", backend=backend, title="synced-store chat")
        return create_app(
            backend,
            data_dir=data_dir,
            routes=page,
            limits=limits,
            allowed_origins=allowed_origins,
        )

    run_server(make_app, host=host, port=port, log_level=log_level, banner=banner, limits=limits)


@click.command("chat")
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

    Type a line and press Enter to send it; start it with "@bot " to ask the bot. /search WORDS
    finds messages, /older shows 50 older messages (a room opens with its latest 50), /name
    NAME sets your display name, /rooms lists the rooms, /cancel stops the reply that is
    streaming, /quit leaves. Input can be piped; the client then prints a transcript and exits
    once the bot replies it asked for are final.

    \b
    Example:
      synced-store chat --url ws://127.0.0.1:8000 --room lobby --user alice
      echo "@bot tell me a story" | synced-store chat --room lobby --user bob
    """
    from .terminal import run_chat_client

    logging.basicConfig(level=logging.ERROR)
    status = asyncio.run(run_chat_client(url, room, user, idle_timeout=idle_timeout))
    raise SystemExit(status)
