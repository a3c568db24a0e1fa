"""Commands contributed by installed packages, through entry points.

An app adds a command to ``synced-store`` (group ``synced_store.commands``) or a demo to
``synced-store demo`` (group ``synced_store.demos``) by naming a click command in its
``pyproject.toml``::

    [project.entry-points."synced_store.demos"]
    chat = "synced_store_examples.chat.commands:demo_chat"

The command is imported only when it runs or ``--help`` lists it; one that fails to import
shows up as a command that reports the error, and the others keep working.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from .loading import CliError

__all__ = ["COMMANDS_GROUP", "DEMOS_GROUP", "PluginGroup"]

COMMANDS_GROUP = "synced_store.commands"
DEMOS_GROUP = "synced_store.demos"


class PluginGroup(click.Group):
    """A click group whose commands are its own plus those of an entry point group."""

    def __init__(self, *args: Any, entry_point_group: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry_point_group = entry_point_group

    def _plugins(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._plugins().get(cmd_name)
        if ep is None:
            return None
        try:
            loaded = ep.load()
        except Exception as exc:
            return _broken(cmd_name, f"{ep.value} failed to import: {type(exc).__name__}: {exc}")
        if not isinstance(loaded, click.Command):
            return _broken(cmd_name, f"{ep.value} is a {type(loaded).__name__}, not a command")
        return loaded

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            if not args or self.get_command(ctx, args[0]) is not None:
                raise
            known = ", ".join(self.list_commands(ctx)) or "none"
            raise click.UsageError(
                f"{exc.format_message()} Installed: {known}. (Packages add commands through "
                f"the {self.entry_point_group!r} entry points; a development install made "
                "before one was added needs `pip install -e .` again.)",
                ctx,
            ) from None


def _broken(name: str, why: str) -> click.Command:
    def fail() -> None:
        raise CliError(f"the command {name!r} cannot run: {why}")

    return click.Command(name, callback=fail, help=f"(unavailable: {why})")
