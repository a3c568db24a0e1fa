"""``synced-store demo NAME``: run a demo app; demos are contributed by installed packages."""

from __future__ import annotations

import click

from .plugins import DEMOS_GROUP, PluginGroup

__all__ = ["demo"]


@click.group(cls=PluginGroup, entry_point_group=DEMOS_GROUP)
def demo() -> None:
    """Run a demo app on the embedded SQLite default.

    Demos come from installed packages (entry points `synced_store.demos`); this project's
    example apps ship `chat`, the chat-with-bot app with its web page.

    \b
    Example:
      synced-store demo chat --port 8000
    """
