"""Reading instance databases from the command line: options, lookup, output helpers."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import SyncedStoreError
from ..storage.sqlite import instance_path, validate_instance_id
from ..types import JobStatus
from .loading import CliError

__all__ = [
    "JOB_STATUSES",
    "console",
    "data_dir_option",
    "echo_json",
    "instance_file",
    "json_option",
    "list_instance_files",
    "open_db",
    "short_json",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Every job status, in lifecycle order (choices of ``--status``, columns of ``inspect``).
JOB_STATUSES = tuple(s.value for s in JobStatus)
_INSTANCE_SUFFIX = ".sqlite3"


def data_dir_option(fn: F) -> F:
    return click.option(
        "--data-dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The server's data directory (one <instance_id>.sqlite3 per instance).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(fn)


def instance_file(data_dir: Path, instance_id: str) -> Path:
    try:
        path = instance_path(data_dir, instance_id)
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None
    if not path.is_file():
        known = ", ".join(i for i, _ in list_instance_files(data_dir)) or "none"
        raise CliError(f"no instance {instance_id!r} in {data_dir} (instances: {known})")
    return path


def list_instance_files(data_dir: Path) -> list[tuple[str, Path]]:
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
def open_db(path: Path, *, read_only: bool = True) -> Iterator[sqlite3.Connection]:
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


def short_json(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
        console = Console(highlight=False, width=200)
    return console


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
