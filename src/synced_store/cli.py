"""The ``synced-store`` command line: a thin click layer over the server and the storage files.

Commands::

    synced-store serve MODULE:ATTR        run a backend with uvicorn
    synced-store inspect                  list instances, or dump one instance (read-only)
    synced-store actions list             list the jobs of an instance's action outbox
    synced-store actions retry            re-queue failed jobs
    synced-store demo chat                run the chat-with-bot demo (from ``chat_cli``)
    synced-store chat                     a terminal chat client (from ``chat_cli``)

Every command's help ends with an ``Example:`` block (``tests/test_cli.py`` checks it).
User errors (bad arguments, missing files, import failures) end with ``Error: ...`` and exit
status 1 or 2, never a traceback.

Extension points (see the ``EXTENSION POINTS`` comment near the end of this module): a new
command is one function decorated with ``@cli.command()`` (or ``@cli.group()`` for a group),
reusing :func:`server_options`, :func:`load_backend` and :func:`run_server`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import SyncedStoreError
from .schema import BackendConfig
from .storage.sqlite import instance_path, validate_instance_id

__all__ = [
    "CliError",
    "cli",
    "load_backend",
    "load_object",
    "main",
    "run_server",
    "server_options",
]

F = TypeVar("F", bound=Callable[..., Any])

JOB_STATUSES = ("pending", "running", "done", "failed")
_INSTANCE_SUFFIX = ".sqlite3"
_CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CliError(click.ClickException):
    """A user error: printed as ``Error: <message>`` with exit status 1, no traceback."""


# -- loading user code -------------------------------------------------------------------------


def _module_name_for_path(path: Path) -> tuple[str, Path]:
    """The dotted module name of a ``.py`` file or package directory, and the directory that
    must be on ``sys.path`` to import it under that name.

    Under the current directory the name is relative to it (``examples/todo/app.py`` ->
    ``examples.todo.app``, so relative imports work). Elsewhere the name is found by walking up
    through directories that contain ``__init__.py``.
    """
    path = path.resolve()
    target = path.with_suffix("") if path.suffix == ".py" else path
    if target.name == "__init__" and path.suffix == ".py":
        target = target.parent
    cwd = Path.cwd().resolve()
    with contextlib.suppress(ValueError):
        parts = target.relative_to(cwd).parts
        if parts and all(p.isidentifier() for p in parts):
            return ".".join(parts), cwd
    parts_rev = [target.name]
    root = target.parent
    while (root / "__init__.py").is_file() and root.name.isidentifier():
        parts_rev.append(root.name)
        root = root.parent
    return ".".join(reversed(parts_rev)), root


def load_object(spec: str, *, what: str = "object") -> Any:
    """Import ``MODULE:ATTR`` and return the attribute.

    ``MODULE`` is a dotted module name (importable from the current directory), a path to a
    ``.py`` file, or a path to a package directory. ``ATTR`` may be dotted (``mod:obj.attr``).
    Raises :class:`CliError` with a one-line explanation on any failure.
    """
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise CliError(
            f"{what} must be given as MODULE:ATTR (for example examples.todo:backend), got {spec!r}"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # like `python -m`: modules in the current directory are importable
        sys.path.insert(0, cwd)
    candidate = Path(module_part)
    if module_part.endswith(".py") or os.sep in module_part or "/" in module_part:
        if not candidate.exists():
            raise CliError(f"no such file or directory: {module_part}")
        if candidate.is_dir() and not (candidate / "__init__.py").is_file():
            raise CliError(f"directory {module_part} is not a Python package (no __init__.py)")
        module_name, root = _module_name_for_path(candidate)
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    else:
        module_name = module_part
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise CliError(
                f"could not import {module_name!r}: no module named {exc.name!r} "
                f"(run from the directory that contains it, or pass a file path)"
            ) from None
        raise CliError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    except Exception as exc:  # the user's module raised while importing
        raise CliError(f"importing {module_name!r} failed: {_describe(exc)}") from None
    obj: Any = module
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise CliError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _describe(exc: BaseException) -> str:
    """``Type: message (file:line)`` of an exception raised by user code."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}:{exc.lineno})"
    elif tb is not None:
        where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def load_backend(spec: str) -> BackendConfig:
    """Import ``MODULE:ATTR`` and check that it is a :class:`BackendConfig`."""
    backend = load_object(spec, what="the backend")
    if not isinstance(backend, BackendConfig):
        raise CliError(
            f"{spec} is a {type(backend).__name__}, not a BackendConfig "
            "(build it with synced_store.define_backend_config)"
        )
    return backend


# -- serving -----------------------------------------------------------------------------------


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


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1" if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host


def _print_banner(
    spec: str, host: str, port: int, data_dir: Path, durability: str, insecure_auth: bool
) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    base = f"ws://{_display_host(host)}:{port}"
    console.print(f"[bold green]synced-store[/] serving [bold]{spec}[/]")
    console.print(f"  connect to    [bold cyan]{base}[/]")
    console.print(
        f"                synced_store.client.connect({base!r}, backend, "
        "instance_id=..., token=...)"
    )
    console.print(f"  sync endpoint {base}/sync/<instance_id>")
    console.print(f"  health        http://{_display_host(host)}:{port}/healthz")
    console.print(f"  data dir      {data_dir.resolve()}  (durability={durability})")
    if insecure_auth:
        console.print(
            "[yellow]  auth          INSECURE development mode: the token is the user id "
            "(pass --auth MODULE:ATTR in production)[/]"
        )


@click.group(context_settings=_CONTEXT_SETTINGS)
@click.version_option(package_name="synced-store", prog_name="synced-store")
def cli() -> None:
    """synced-store: a local-first sync engine.

    Run a backend with `serve`, look inside instance databases with `inspect`, manage the
    action outbox with `actions list` / `actions retry`, and try the chat demo with
    `demo chat` and `chat`.

    \b
    Example:
        synced-store serve examples.todo:backend --data-dir /tmp/todo-data
        synced-store inspect --data-dir /tmp/todo-data
    """


@cli.command()
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
    from .server import create_app

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
        banner=lambda p: _print_banner(
            app_spec, host, p, data_dir, durability, authenticate is None
        ),
    )


# -- reading instance databases ----------------------------------------------------------------


def _data_dir_option(fn: F) -> F:
    return click.option(
        "--data-dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The server's data directory (one <instance_id>.sqlite3 per instance).",
    )(fn)


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(fn)


def _instance_file(data_dir: Path, instance_id: str) -> Path:
    try:
        path = instance_path(data_dir, instance_id)
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None
    if not path.is_file():
        known = ", ".join(i for i, _ in _list_instance_files(data_dir)) or "none"
        raise CliError(f"no instance {instance_id!r} in {data_dir} (instances: {known})")
    return path


def _list_instance_files(data_dir: Path) -> list[tuple[str, Path]]:
    if not data_dir.is_dir():
        raise CliError(f"data dir {data_dir} does not exist")
    out = []
    for p in sorted(data_dir.glob("*" + _INSTANCE_SUFFIX)):
        iid = p.name[: -len(_INSTANCE_SUFFIX)]
        try:
            validate_instance_id(iid)
        except SyncedStoreError:
            continue
        out.append((iid, p))
    return out


@contextlib.contextmanager
def _open_db(path: Path, *, read_only: bool = True) -> Iterator[sqlite3.Connection]:
    """An SQLite connection to an instance file: ``mode=ro`` when ``read_only`` (never creates
    or changes the file), with a busy timeout so a running server's writes do not fail us."""
    mode = "ro" if read_only else "rw"
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}", uri=True, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise CliError(f"cannot open {path}: {exc}") from None
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise CliError(f"{path}: {exc}") from None
    finally:
        conn.close()


def _namespace_label(ns: str) -> str:
    if ns == "":
        return "public"
    if ns.startswith("u:"):
        return "user:" + ns[2:]
    if ns == "s":
        return "server-only"
    return ns


def _job_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for status, n in conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
        counts[str(status)] = int(n)
    return counts


def _summary(instance_id: str, path: Path) -> dict[str, Any]:
    with _open_db(path) as conn:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        live, tombstones = conn.execute(
            "SELECT COALESCE(SUM(deleted = 0), 0), COALESCE(SUM(deleted = 1), 0) FROM rows"
        ).fetchone()
        tables = {
            str(t): int(n)
            for t, n in conn.execute(
                "SELECT tbl, COUNT(*) FROM rows WHERE deleted = 0 GROUP BY tbl ORDER BY tbl"
            )
        }
        clients = int(conn.execute("SELECT COUNT(*) FROM clients").fetchone()[0])
        jobs = _job_counts(conn)
        conn.execute("COMMIT")
    return {
        "instance_id": instance_id,
        "path": str(path),
        "bytes": path.stat().st_size,
        "version": int(meta.get("version", 0)),
        "schema_version": None
        if meta.get("schema_version") is None
        else int(meta["schema_version"]),
        "horizon": int(meta.get("horizon", 0)),
        "rows": int(live),
        "tombstones": int(tombstones),
        "tables": tables,
        "clients": clients,
        "jobs": jobs,
    }


def _dump(instance_id: str, path: Path, table: str | None) -> dict[str, Any]:
    info = _summary(instance_id, path)
    with _open_db(path) as conn:
        conn.execute("BEGIN")
        sql = "SELECT ns, tbl, item, sk, value, version FROM rows WHERE deleted = 0"
        args: tuple[str, ...] = ()
        if table is not None:
            sql += " AND tbl = ?"
            args = (table,)
        rows = [
            {
                "namespace": _namespace_label(ns),
                "table": tbl,
                "item_key": item,
                "sort_key": sk,
                "version": int(version),
                "value": json.loads(value),
            }
            for ns, tbl, item, sk, value, version in conn.execute(
                sql + " ORDER BY ns, tbl, sk, item", args
            )
        ]
        clients = [
            {
                "client_id": cid,
                "user_id": uid,
                "last_mutation_id": int(lmid),
                "version": int(version),
            }
            for cid, uid, lmid, version in conn.execute(
                "SELECT client_id, user_id, last_mutation_id, version FROM clients "
                "ORDER BY client_id"
            )
        ]
        conn.execute("COMMIT")
    info["rows"] = rows
    info["row_count"] = len(rows)
    info["clients"] = clients
    return info


def _short_json(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
        console = Console(highlight=False, width=200)
    return console


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@cli.command()
@_data_dir_option
@click.argument("instance_id", metavar="[INSTANCE]", required=False)
@click.option(
    "--table",
    "table_name",
    metavar="T",
    default=None,
    help="Only rows of this table (with INSTANCE).",
)
@_json_option
def inspect(data_dir: Path, instance_id: str | None, table_name: str | None, as_json: bool) -> None:
    """Show the instances of a data dir, or the contents of one instance.

    Without INSTANCE: every instance with its version, schema version, row, tombstone, client
    and job counts (an unreadable file is listed with its error).
    With INSTANCE: its rows (namespace, table, item key, sort key, value), its clients (with
    last_mutation_id) and a summary of its action jobs. This is a read-only operation: the
    files are opened with SQLite's mode=ro and are safe to inspect while a server runs.

    \b
    Example:
        synced-store inspect --data-dir ./data
        synced-store inspect --data-dir ./data room1 --table todos
        synced-store inspect --data-dir ./data room1 --json
    """
    if instance_id is None:
        if table_name is not None:
            raise CliError("--table needs an INSTANCE")
        summaries = []
        for iid, path in _list_instance_files(data_dir):
            try:
                summaries.append(_summary(iid, path))
            except CliError as exc:  # one unreadable file must not hide the others
                summaries.append({"instance_id": iid, "path": str(path), "error": exc.message})
        if as_json:
            _echo_json(summaries)
            return
        _print_summaries(data_dir, summaries)
        return
    dump = _dump(instance_id, _instance_file(data_dir, instance_id), table_name)
    if as_json:
        _echo_json(dump)
        return
    _print_dump(dump, table_name)


def _print_summaries(data_dir: Path, summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    console = _console()
    if not summaries:
        console.print(f"no instances in {data_dir}")
        return
    t = Table(title=f"instances in {data_dir}", title_justify="left")
    for col in ("instance", "version", "schema", "rows", "tombstones", "tables", "clients", "jobs"):
        t.add_column(col, justify="left" if col in ("instance", "tables", "jobs") else "right")
    for s in summaries:
        if "error" in s:
            t.add_row(s["instance_id"], "-", "-", "-", "-", f"[red]{s['error']}[/]", "-", "-")
            continue
        jobs = ", ".join(f"{k} {v}" for k, v in s["jobs"].items() if v) or "-"
        tables = ", ".join(f"{k} {v}" for k, v in s["tables"].items()) or "-"
        t.add_row(
            s["instance_id"],
            str(s["version"]),
            "-" if s["schema_version"] is None else str(s["schema_version"]),
            str(s["rows"]),
            str(s["tombstones"]),
            tables,
            str(s["clients"]),
            jobs,
        )
    console.print(t)


def _print_dump(dump: dict[str, Any], table_name: str | None) -> None:
    from rich.table import Table

    console = _console()
    console.print(
        f"[bold]{dump['instance_id']}[/]  version {dump['version']}  "
        f"schema version {dump['schema_version'] if dump['schema_version'] is not None else '-'}  "
        f"({dump['path']}, {dump['bytes']} bytes, {dump['tombstones']} tombstones)"
    )
    what = f"rows of {table_name}" if table_name else "rows"
    rows = Table(title=f"{what} ({dump['row_count']})", title_justify="left")
    for col in ("namespace", "table", "item key", "sort key"):
        rows.add_column(col, no_wrap=True)
    rows.add_column("value", overflow="fold")
    for r in dump["rows"]:
        rows.add_row(
            r["namespace"], r["table"], r["item_key"], r["sort_key"], _short_json(r["value"])
        )
    console.print(rows)
    clients = Table(title=f"clients ({len(dump['clients'])})", title_justify="left")
    for col in ("client id", "user", "last_mutation_id", "version"):
        clients.add_column(col)
    for c in dump["clients"]:
        clients.add_row(c["client_id"], c["user_id"], str(c["last_mutation_id"]), str(c["version"]))
    console.print(clients)
    jobs = ", ".join(f"{k} {v}" for k, v in dump["jobs"].items())
    console.print(f"jobs: {jobs}  (details: synced-store actions list)")


# -- the action outbox -------------------------------------------------------------------------


@cli.group()
def actions() -> None:
    """List and retry the jobs of an instance's action outbox.

    Jobs are written by ctx.enqueue_action() in the same transaction as their mutation and run
    at least once by the server. A job that fails max_attempts times is kept as 'failed';
    `actions retry` puts it back to 'pending' and a running server picks it up within about a
    second (its runner polls the outbox of every open instance).

    \b
    Example:
        synced-store actions list --data-dir ./data room1 --status failed
        synced-store actions retry --data-dir ./data room1 --all-failed
    """


def _job_row(r: tuple[Any, ...]) -> dict[str, Any]:
    (jid, name, inp, uid, status, attempts, next_run_at, last_error, output, created, updated) = r
    return {
        "id": int(jid),
        "name": name,
        "status": status,
        "attempts": int(attempts),
        "user_id": uid,
        "input": json.loads(inp),
        "output": None if output is None else json.loads(output),
        "last_error": last_error,
        "next_run_at": float(next_run_at),
        "created_at": float(created),
        "updated_at": float(updated),
    }


def _fmt_time(ts: float) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@actions.command("list")
@_data_dir_option
@click.argument("instance_id", metavar="INSTANCE")
@click.option(
    "--status", type=click.Choice(JOB_STATUSES), default=None, help="Only jobs with this status."
)
@_json_option
def actions_list(data_dir: Path, instance_id: str, status: str | None, as_json: bool) -> None:
    """List the action jobs of INSTANCE, oldest first.

    Read-only: the database is opened with SQLite's mode=ro.

    \b
    Example:
        synced-store actions list --data-dir ./data room1
        synced-store actions list --data-dir ./data room1 --status failed --json
    """
    path = _instance_file(data_dir, instance_id)
    sql = (
        "SELECT id, name, input, user_id, status, attempts, next_run_at, last_error, output, "
        "created_at, updated_at FROM jobs"
    )
    args: tuple[str, ...] = ()
    if status is not None:
        sql += " WHERE status = ?"
        args = (status,)
    with _open_db(path) as conn:
        jobs = [_job_row(r) for r in conn.execute(sql + " ORDER BY id", args)]
    if as_json:
        _echo_json(jobs)
        return
    from rich.table import Table

    t = Table(title=f"jobs of {instance_id} ({len(jobs)})", title_justify="left")
    for col in ("id", "action", "status", "attempts", "user", "input", "updated", "last error"):
        t.add_column(col, overflow="fold" if col in ("input", "last error") else "ellipsis")
    for j in jobs:
        t.add_row(
            str(j["id"]),
            j["name"],
            j["status"],
            str(j["attempts"]),
            j["user_id"],
            _short_json(j["input"], 60),
            _fmt_time(j["updated_at"]),
            (j["last_error"] or "")[:200],
        )
    _console().print(t)


@actions.command("retry")
@_data_dir_option
@click.argument("instance_id", metavar="INSTANCE")
@click.argument("job_ids", metavar="[JOB_ID]...", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="Retry every failed job of INSTANCE.")
def actions_retry(
    data_dir: Path, instance_id: str, job_ids: tuple[int, ...], all_failed: bool
) -> None:
    """Put failed jobs of INSTANCE back to 'pending' with a fresh attempt budget.

    Sets status='pending', attempts=0, next_run_at=0. Only 'failed' and 'pending' jobs can be
    retried ('running' and 'done' ones are refused). Safe while the server runs: it picks the
    jobs up within about a second once the instance is open (a client is connected).

    \b
    Example:
        synced-store actions retry --data-dir ./data room1 42
        synced-store actions retry --data-dir ./data room1 --all-failed
    """
    if bool(job_ids) == all_failed:
        raise click.UsageError("give JOB_ID(s) or --all-failed (not both)")
    path = _instance_file(data_dir, instance_id)
    now = time.time()
    with _open_db(path, read_only=False) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if all_failed:
                ids = [
                    int(r[0])
                    for r in conn.execute("SELECT id FROM jobs WHERE status = 'failed' ORDER BY id")
                ]
            else:
                ids = []
                for jid in job_ids:
                    r = conn.execute("SELECT status FROM jobs WHERE id = ?", (jid,)).fetchone()
                    if r is None:
                        raise CliError(f"instance {instance_id!r} has no job {jid}")
                    if r[0] not in ("failed", "pending"):
                        raise CliError(
                            f"job {jid} is {r[0]}; only failed or pending jobs can be retried"
                        )
                    ids.append(jid)
            conn.executemany(
                "UPDATE jobs SET status = 'pending', attempts = 0, next_run_at = 0, "
                "updated_at = ? WHERE id = ?",
                [(now, jid) for jid in ids],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    if not ids:
        click.echo(f"no failed jobs in {instance_id}")
        return
    click.echo(f"re-queued {len(ids)} job(s) of {instance_id}: {', '.join(map(str, ids))}")


# -- EXTENSION POINTS --------------------------------------------------------------------------
#
# New commands are plain functions registered on `cli` (or on a group hanging off it); keep each
# thin and put the logic in the library. A command that runs a server reuses `server_options`,
# `load_backend` and `run_server(make_app, host=..., port=..., log_level=..., banner=...)`, as
# `serve` does above. Commands may also live in their own module and be registered here with
# `cli.add_command(...)`, like the chat demo's:
#
#   * `synced-store demo chat`: the `demo` group (one command per demo), and
#   * `synced-store chat`: a terminal chat client,
#
# both in `synced_store/chat_cli.py` (owned by the examples/chat author).
#
# Every command's help must end with an `Example:` block (after a `\b` line so click keeps the
# line breaks); tests/test_cli.py walks every command and checks it, and checks that
# docs/operations.md shows it.
# ---------------------------------------------------------------------------------------------

from .chat_cli import chat as _chat  # noqa: E402 - registered after the core commands
from .chat_cli import demo as _demo  # noqa: E402

cli.add_command(_demo)
cli.add_command(_chat)


@cli.group()
def web() -> None:
    """The browser client: fetch the runtime the web page needs.

    \b
    Example:
        synced-store web build
    """


@web.command("build")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to put the runtime (default: ./web-build or $SYNCED_STORE_WEB_BUILD).",
)
@click.option("--force", is_flag=True, help="Fetch again even if already built.")
def web_build(out: Path | None, force: bool) -> None:
    """Fetch Pyodide (npm) and the pydantic wheels for its ABI (PyPI) into web-build/.

    The server then serves these files itself: the page never contacts another host.
    Needs `npm` and network access to the npm registry and PyPI, once.

    \b
    Example:
        synced-store web build --out ./web-build
    """
    from .web.build import main as build_main

    build_main((["--out", str(out)] if out is not None else []) + (["--force"] if force else []))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``synced-store`` console script."""
    cli.main(args=argv, prog_name="synced-store")


if __name__ == "__main__":  # pragma: no cover - `python -m synced_store.cli`
    main()
