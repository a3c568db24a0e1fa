"""The ``synced-store`` command line: a thin click layer over the server and the storage files.

Commands, one module each::

    synced-store serve MODULE:ATTR        run a backend with uvicorn            (serve.py)
    synced-store inspect                  list instances, or dump one instance  (inspect.py)
    synced-store actions list|retry       the jobs of an instance's outbox      (actions.py)
    synced-store compact                  run retention on instances by hand    (compact.py)
    synced-store db upgrade|copy          PostgreSQL: its schema, SQLite -> it  (db.py)
    synced-store web build                fetch the browser runtime             (web.py)
    synced-store token                    mint a signed token for a user        (tokens.py)
    synced-store demo NAME                run a demo app                        (demo.py)
    synced-store mcp MODULE:ATTR          an app's tools as an MCP server (stdio) (mcp.py)
    synced-store members add|remove|list  the members of an instance            (members.py)
    synced-store schema MODULE:ATTR       an app's tables, mutators, actions    (store_ops.py)
    synced-store mutate MUTATOR JSON      one mutation as a client of a server  (store_ops.py)

Installed packages add commands through entry points (``plugins.py``): the example chat app adds
``synced-store demo chat`` and ``synced-store chat`` (``examples/chat/commands.py``).

Every command's help ends with an ``Example:`` block (``tests/test_cli.py`` checks it).
User errors (bad arguments, missing files, import failures) end with ``Error: ...`` and exit
status 1 or 2, never a traceback.

A new command is one module defining a click command (or group) and one ``cli.add_command``
line below; a command that runs a server reuses :func:`server_options` (or
:func:`connection_options`), :func:`load_backend`, :func:`limits_from_options` and
:func:`run_server`, as ``serve`` and the chat demo do.
"""

from __future__ import annotations

from .actions import actions
from .compact import compact
from .db import db
from .demo import demo
from .group import cli
from .inspect import inspect
from .loading import CliError, load_backend, load_object
from .mcp import mcp
from .members import members
from .serve import serve
from .serving import (
    connection_options,
    display_host,
    limits_from_options,
    run_server,
    server_options,
)
from .store_ops import mutate, schema
from .tokens import token
from .web import web

__all__ = [
    "CliError",
    "cli",
    "connection_options",
    "display_host",
    "limits_from_options",
    "load_backend",
    "load_object",
    "main",
    "run_server",
    "server_options",
]

for _command in (
    serve,
    inspect,
    actions,
    compact,
    db,
    demo,
    web,
    token,
    mcp,
    members,
    schema,
    mutate,
):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``synced-store`` console script."""
    cli.main(args=argv, prog_name="synced-store")
