"""``synced-store serve``: run a backend over WebSockets with uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .files import DATABASE_ENV, database_option
from .loading import CliError, load_backend, load_object
from .serving import limits_from_options, print_banner, run_server, server_options

__all__ = ["serve"]


@click.command()
@click.argument("app_spec", metavar="MODULE:ATTR")
@server_options
@database_option
@click.option(
    "--database-pool-size",
    type=click.IntRange(min=2),
    default=20,
    show_default=True,
    envvar="SYNCED_STORE_DATABASE_POOL_SIZE",
    help="PostgreSQL connections of this process at most (with --database; one more listens).",
)
@click.option(
    "--auth",
    "auth_spec",
    metavar="MODULE:ATTR",
    default=None,
    help="Authenticator `token -> user_id | Identity | None` (sync or async). "
    "Default: INSECURE development auth (the token is the user id).",
)
@click.option(
    "--jwt-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Verify signed tokens (HS256) with the secret in this file (at least 32 bytes).",
)
@click.option(
    "--jwt-public-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Verify signed tokens with this PEM public key (RS256 for RSA, ES256 for P-256).",
)
@click.option("--jwt-audience", default=None, help="Required `aud` claim of tokens.")
@click.option("--jwt-issuer", default=None, help="Required `iss` claim of tokens.")
@click.option(
    "--insecure-dev-auth",
    is_flag=True,
    help="Allow development auth (the token is the user id) on a non-loopback --host.",
)
def serve(
    app_spec: str,
    host: str,
    port: int,
    data_dir: Path,
    database: str | None,
    database_pool_size: int,
    durability: str,
    log_level: str,
    max_connections: int | None,
    max_message_bytes: int | None,
    header_timeout: float | None,
    keep_alive_timeout: float | None,
    allowed_origins: tuple[str, ...],
    auth_spec: str | None,
    jwt_secret_file: Path | None,
    jwt_public_key_file: Path | None,
    jwt_audience: str | None,
    jwt_issuer: str | None,
    insecure_dev_auth: bool,
) -> None:
    """Serve the BackendConfig MODULE:ATTR over WebSockets.

    MODULE is a dotted module name importable from the current directory, a path to a .py
    file, or a path to a package directory. One SQLite database per instance is created under
    --data-dir on first use; clients connect to ws://HOST:PORT (sync endpoint
    /sync/<instance_id>).

    With --database (or $SYNCED_STORE_DATABASE) every instance lives in one PostgreSQL
    database instead, and any number of serve processes may share it behind a load balancer
    (docs/operations.md); create its schema first with `synced-store db upgrade DSN`.

    Authentication: --jwt-secret-file or --jwt-public-key-file verify signed tokens (`sub` is
    the user id, `exp` required; see `synced-store token`), --auth names your own
    authenticator. Without either the token is taken as the user id (INSECURE, development
    only): allowed on a loopback --host, refused elsewhere unless --insecure-dev-auth.

    \b
    Example:
        synced-store serve examples.todo:backend --data-dir /tmp/todo-data
        synced-store serve examples/todo/app.py:backend --port 9000 --durability full
        synced-store serve examples.todo:backend --host 0.0.0.0 --jwt-secret-file secret.key
        synced-store serve examples.todo:backend --database postgresql://postgres@127.0.0.1/app
    """
    from ..server import create_app
    from ..server.jwt_auth import AuthConfigError, authenticator_from_options, check_dev_auth_host

    backend = load_backend(app_spec)
    authenticate = None
    if auth_spec is not None:
        authenticate = load_object(auth_spec, what="the authenticator")
        if not callable(authenticate):
            raise CliError(f"{auth_spec} is not callable")
    try:
        jwt_auth = authenticator_from_options(
            jwt_secret_file=jwt_secret_file,
            jwt_public_key_file=jwt_public_key_file,
            jwt_audience=jwt_audience,
            jwt_issuer=jwt_issuer,
        )
        if jwt_auth is not None and authenticate is not None:
            raise CliError("give --auth or --jwt-secret-file / --jwt-public-key-file, not both")
        authenticate = jwt_auth or authenticate
        if authenticate is None:
            check_dev_auth_host(host, insecure_dev_auth)
    except AuthConfigError as exc:
        raise CliError(str(exc)) from None
    storage = _database(database, database_pool_size, data_dir)
    if storage is None:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create data dir {data_dir}: {exc.strerror or exc}") from None
    limits = limits_from_options(
        max_connections=max_connections,
        max_message_bytes=max_message_bytes,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
    )
    run_server(
        lambda: create_app(
            backend,
            data_dir=data_dir,
            database=storage,
            durability=durability,
            authenticate=authenticate,
            limits=limits,
            allowed_origins=allowed_origins,
        ),
        host=host,
        port=port,
        log_level=log_level,
        limits=limits,
        banner=lambda p: print_banner(
            app_spec,
            host,
            p,
            data_dir,
            durability,
            authenticate is None,
            None if storage is None else storage.where,
        ),
    )


def _database(database: str | None, pool_size: int, data_dir: Path) -> Any:
    """The PostgreSQL backend of ``--database`` (None: the SQLite data dir). An explicit
    ``--data-dir`` wins over ``$SYNCED_STORE_DATABASE``; both given explicitly is an error."""
    if database is None:
        return None
    ctx = click.get_current_context()
    explicit_dir = ctx.get_parameter_source("data_dir") is click.core.ParameterSource.COMMANDLINE
    if explicit_dir:
        if ctx.get_parameter_source("database") is click.core.ParameterSource.ENVIRONMENT:
            return None
        raise click.UsageError(f"give --data-dir or --database (${DATABASE_ENV}), not both")
    try:
        from ..storage.postgres import PostgresBackend
    except ImportError as exc:
        raise CliError(
            f"--database needs asyncpg ({exc}): pip install 'synced-store[postgres]'"
        ) from None
    try:
        backend = PostgresBackend(database, pool_size=pool_size)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _check_schema(PostgresBackend(database))
    return backend


def _check_schema(backend: Any) -> None:
    """Refuse a database without synced-store's schema (or with another version) before
    serving anything (``backend`` is a throwaway, closed after); a database that does not
    answer yet is the server's to wait for."""
    import asyncio

    from ..errors import StorageError
    from ..storage.records import DatabaseSchemaError

    async def check() -> None:
        try:
            await backend.start()
        finally:
            await backend.close()

    try:
        asyncio.run(check())
    except DatabaseSchemaError as exc:
        raise CliError(str(exc)) from None
    except StorageError:
        return  # down for now: the server starts and reconnects (/healthz says 503 meanwhile)
