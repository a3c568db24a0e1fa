"""``synced-store web build``: fetch the browser runtime (Pyodide and the pydantic wheels)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["web"]


@click.group()
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
    from ..web.build import main as build_main

    build_main((["--out", str(out)] if out is not None else []) + (["--force"] if force else []))
