"""The ``synced-store`` command line: a thin click layer over the server and the storage files.

Commands, one module each::

    synced-store serve MODULE:ATTR        run a backend with uvicorn            (serve.py)
    synced-store inspect                  list instances, or dump one instance  (inspect.py)
    synced-store actions list|retry       the jobs of an instance's outbox      (actions.py)
    synced-store compact                  run retention on instances by hand    (compact.py)
    synced-store web build                fetch the browser runtime             (web.py)
    synced-store demo chat                run the chat-with-bot demo            (chat_cli)
    synced-store chat                     a terminal chat client                (chat_cli)

Every command's help ends with an ``Example:`` block (``tests/test_cli.py`` checks it).
User errors (bad arguments, missing files, import failures) end with ``Error: ...`` and exit
status 1 or 2, never a traceback.

A new command is one module defining a click command (or group) and one ``cli.add_command``
line below; a command that runs a server reuses :func:`server_options`, :func:`load_backend`
and :func:`run_server`, as ``serve`` does.
"""

from __future__ import annotations

from ..chat_cli import chat, demo
from .actions import actions
from .compact import compact
from .group import cli
from .inspect import inspect
from .loading import CliError, load_backend, load_object
from .serve import serve
from .serving import run_server, server_options
from .tokens import token
from .web import web

__all__ = [
    "CliError",
    "cli",
    "load_backend",
    "load_object",
    "main",
    "run_server",
    "server_options",
]

for _command in (serve, inspect, actions, compact, demo, chat, web, token):
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``synced-store`` console script."""
    cli.main(args=argv, prog_name="synced-store")
