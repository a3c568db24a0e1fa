"""Running an ASGI app with uvicorn from a command: shared options, binding, the banner."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .loading import CliError

__all__ = ["display_host", "print_banner", "run_server", "server_options"]

F = TypeVar("F", bound=Callable[..., Any])


def server_options(fn: F) -> F:
    """Shared ``--host``, ``--port``, ``--data-dir``, ``--durability`` and ``--log-level``
    options for commands that run a server (``serve``, and demos)."""
    options = [
        click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help="Interface to listen on (0.0.0.0 for every interface).",
        ),
        click.option(
            "--port",
            default=8000,
            show_default=True,
            type=click.IntRange(0, 65535),
            help="TCP port (0 picks a free one).",
        ),
        click.option(
            "--data-dir",
            default="./data",
            show_default=True,
            type=click.Path(file_okay=False, path_type=Path),
            help="Directory of the instance databases (one <id>.sqlite3 each).",
        ),
        click.option(
            "--durability",
            default="normal",
            show_default=True,
            type=click.Choice(["normal", "full"]),
            help="normal: survives a killed process; full: also survives power loss.",
        ),
        click.option(
            "--log-level",
            default="info",
            show_default=True,
            type=click.Choice(["debug", "info", "warning", "error"]),
            help="Logging level of the server.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, rich_tracebacks=True, markup=False)
    logging.basicConfig(
        level=level.upper(), format="%(message)s", datefmt="[%X]", handlers=[handler], force=True
    )


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to ``host:port`` (so a busy port fails before startup)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def run_server(
    make_app: Callable[[], Any],
    *,
    host: str,
    port: int,
    log_level: str = "info",
    banner: Callable[[int], None] | None = None,
) -> None:
    """Run the ASGI app ``make_app()`` with uvicorn until interrupted (Ctrl-C or SIGTERM).

    Binds ``host:port`` first, so a port in use is a clean :class:`CliError` before anything
    else happens; then sets up rich logging at ``log_level``, calls ``banner(port)`` with the
    actual port (useful with ``--port 0``), builds the app and serves it.
    """
    import uvicorn

    sock = _bind(host, port)
    try:
        actual_port = int(sock.getsockname()[1])
        _setup_logging(log_level)
        if banner is not None:
            banner(actual_port)
        config = uvicorn.Config(
            make_app(),
            host=host,
            port=actual_port,
            log_config=None,
            log_level=log_level,
            lifespan="on",
            access_log=log_level == "debug",
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise CliError("the server failed to start (see the log above)")


def display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1" if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host


def print_banner(
    spec: str, host: str, port: int, data_dir: Path, durability: str, insecure_auth: bool
) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    base = f"ws://{display_host(host)}:{port}"
    console.print(f"[bold green]synced-store[/] serving [bold]{spec}[/]")
    console.print(f"  connect to    [bold cyan]{base}[/]")
    console.print(
        f"                synced_store.client.connect({base!r}, backend, "
        "instance_id=..., token=...)"
    )
    console.print(f"  sync endpoint {base}/sync/<instance_id>")
    console.print(f"  health        http://{display_host(host)}:{port}/healthz")
    console.print(f"  data dir      {data_dir.resolve()}  (durability={durability})")
    if insecure_auth:
        console.print(
            "[yellow]  auth          INSECURE development mode: the token is the user id "
            "(pass --auth MODULE:ATTR in production)[/]"
        )
