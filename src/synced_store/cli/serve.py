"""``synced-store serve``: run a backend over WebSockets with uvicorn."""

from __future__ import annotations

from pathlib import Path

import click

from .loading import CliError, load_backend, load_object
from .serving import print_banner, run_server, server_options

__all__ = ["serve"]


@click.command()
@click.argument("app_spec", metavar="MODULE:ATTR")
@server_options
@click.option(
    "--auth",
    "auth_spec",
    metavar="MODULE:ATTR",
    default=None,
    help="Authenticator `token -> user_id | None` (sync or async). "
    "Default: INSECURE development auth (the token is the user id).",
)
def serve(
    app_spec: str,
    host: str,
    port: int,
    data_dir: Path,
    durability: str,
    log_level: str,
    auth_spec: str | None,
) -> None:
    """Serve the BackendConfig MODULE:ATTR over WebSockets.

    MODULE is a dotted module name importable from the current directory, a path to a .py
    file, or a path to a package directory. One SQLite database per instance is created under
    --data-dir on first use; clients connect to ws://HOST:PORT (sync endpoint
    /sync/<instance_id>).

    \b
    Example:
        synced-store serve examples.todo:backend --data-dir /tmp/todo-data
        synced-store serve examples/todo/app.py:backend --port 9000 --durability full
    """
    from ..server import create_app

    backend = load_backend(app_spec)
    authenticate = None
    if auth_spec is not None:
        authenticate = load_object(auth_spec, what="the authenticator")
        if not callable(authenticate):
            raise CliError(f"{auth_spec} is not callable")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from None
    run_server(
        lambda: create_app(
            backend, data_dir=data_dir, durability=durability, authenticate=authenticate
        ),
        host=host,
        port=port,
        log_level=log_level,
        banner=lambda p: print_banner(
            app_spec, host, p, data_dir, durability, authenticate is None
        ),
    )
