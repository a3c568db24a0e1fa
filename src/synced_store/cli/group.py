"""The ``synced-store`` click group: commands are added in ``synced_store.cli``, and installed
packages add theirs through the ``synced_store.commands`` entry points (``cli/plugins.py``)."""

from __future__ import annotations

import click

from .plugins import COMMANDS_GROUP, PluginGroup

__all__ = ["cli"]

_CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=PluginGroup, entry_point_group=COMMANDS_GROUP, context_settings=_CONTEXT_SETTINGS)
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
