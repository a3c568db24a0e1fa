"""Running an ASGI app with uvicorn from a command: shared options, binding, the banner."""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .loading import CliError

if TYPE_CHECKING:
    from ..server.limits import ServerLimits

__all__ = [
    "connection_options",
    "display_host",
    "limits_from_options",
    "print_banner",
    "run_server",
    "server_options",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The ``ServerLimits`` fields :func:`connection_options` sets (each a keyword argument of
#: the command, None when not given), with their defaults as shown in ``--help`` (written
#: out so that the command line does not import the server; a test checks them).
LIMIT_OPTIONS = {
    "max_connections": "4096",
    "max_message_bytes": "8388608",
    "header_timeout": "10",
    "keep_alive_timeout": "5",
}


def _check_origins(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    from ..server.web_security import normalize_origin

    try:
        return tuple(normalize_origin(v) for v in value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _connection_specs() -> list[tuple[list[str], dict[str, Any]]]:
    from ..protocol.codec import MAX_FRAME_BYTES

    d = LIMIT_OPTIONS
    return [
        (
            ["--max-connections"],
            {
                "type": click.IntRange(min=1),
                "show_default": d["max_connections"],
                "help": "Concurrent connections (HTTP and WebSocket) served; more get HTTP 503.",
            },
        ),
        (
            ["--max-message-bytes"],
            {
                "type": click.IntRange(1, MAX_FRAME_BYTES),
                "show_default": d["max_message_bytes"],
                "help": "Largest WebSocket message accepted (after decompression); larger "
                "ones close the connection with 1009.",
            },
        ),
        (
            ["--header-timeout"],
            {
                "type": click.FloatRange(min=0, min_open=True),
                "show_default": d["header_timeout"],
                "help": "Seconds a client has to send a complete HTTP request head (slowloris).",
            },
        ),
        (
            ["--keep-alive-timeout"],
            {
                "type": click.FloatRange(min=0, min_open=True),
                "show_default": d["keep_alive_timeout"],
                "help": "Seconds an idle keep-alive HTTP connection stays open.",
            },
        ),
        (
            ["--allowed-origin", "allowed_origins"],
            {
                "multiple": True,
                "metavar": "ORIGIN",
                "callback": _check_origins,
                "help": "A browser origin (https://app.example.com) allowed to open sync "
                "connections besides the server's own and loopback; repeatable; '*' allows "
                "any.",
            },
        ),
    ]


def connection_options(fn: F) -> F:
    """``--max-connections``, ``--max-message-bytes``, ``--header-timeout``,
    ``--keep-alive-timeout`` (keyword arguments ``max_connections`` ..., None when not given:
    pass them all to :func:`limits_from_options`) and ``--allowed-origin`` (repeatable:
    keyword argument ``allowed_origins``, a tuple of normalized origins for
    ``create_app(allowed_origins=...)``). Part of :func:`server_options`."""
    for decls, attrs in reversed(_connection_specs()):
        fn = click.option(*decls, **attrs)(fn)
    return fn


def limits_from_options(**options: Any) -> ServerLimits:
    """The :class:`ServerLimits` of a command's options: ``max_connections=...`` and any other
    ``ServerLimits`` field; None (an option not given) keeps the default.

    Raises:
        CliError: an unknown field, or a value the limits refuse.
    """
    import dataclasses

    from ..server.limits import ServerLimits

    fields = {f.name for f in dataclasses.fields(ServerLimits)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise CliError(f"not a server limit: {', '.join(unknown)}")
    try:
        return ServerLimits(**{k: v for k, v in options.items() if v is not None})
    except ValueError as exc:
        raise CliError(str(exc)) from None


def server_options(fn: F) -> F:
    """Shared ``--host``, ``--port``, ``--data-dir``, ``--durability`` and ``--log-level``
    options for commands that run a server (``serve``, and demos), and the
    :func:`connection_options` if the command takes them (a ``max_connections`` parameter or
    ``**kwargs``): a command that would ignore them does not offer them."""
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
    return connection_options(fn) if _takes(fn, "max_connections") else fn


def _takes(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


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
    limits: ServerLimits | None = None,
) -> None:
    """Run the ASGI app ``make_app()`` with uvicorn until interrupted (Ctrl-C or SIGTERM).

    Binds ``host:port`` first, so a port in use is a clean :class:`CliError` before anything
    else happens; then sets up rich logging at ``log_level``, calls ``banner(port)`` with the
    actual port (useful with ``--port 0``), builds the app and serves it within ``limits``
    (connection cap, message size, HTTP timeouts: see
    :func:`~synced_store.server.uvicorn_setup.uvicorn_config`; pass the same limits to
    ``create_app``).
    """
    import uvicorn

    from ..server.uvicorn_setup import uvicorn_config

    sock = _bind(host, port)
    try:
        actual_port = int(sock.getsockname()[1])
        _setup_logging(log_level)
        if banner is not None:
            banner(actual_port)
        config = uvicorn_config(
            make_app(),
            limits,
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
    """The host to put in a URL for a server bound to ``host``: loopback for the wildcard
    addresses (``0.0.0.0``, ``::``), IPv6 in brackets."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1" if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host


def print_banner(
    spec: str,
    host: str,
    port: int,
    data_dir: Path,
    durability: str,
    insecure_auth: bool,
    database: str | None = None,
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
    if database is not None:
        console.print(f"  database      {database}  (shared: run as many processes as needed)")
    else:
        console.print(f"  data dir      {data_dir.resolve()}  (durability={durability})")
    if insecure_auth:
        console.print(
            "[yellow]  auth          INSECURE development mode: the token is the user id "
            "(pass --jwt-secret-file F or --auth MODULE:ATTR in production)[/]"
        )
