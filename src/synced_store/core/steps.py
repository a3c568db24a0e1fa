"""Running a client pass of a mutator or query: one step of a coroutine that must not suspend."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ..errors import MutatorError

__all__ = ["run_sync"]


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that must not suspend (a mutator or query on a client pass).

    Table operations never suspend, so a client mutator completes in one step. One that awaits
    anything else (a sleep, a network call) is a bug: it raises :class:`MutatorError`.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise MutatorError(
        "a mutator or query awaited something other than a table operation; "
        "client passes must be deterministic and do no I/O"
    )
