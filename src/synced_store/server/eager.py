"""Start a coroutine in the calling task and finish it in a new task only if it suspends.

Python 3.12's ``asyncio.eager_task_factory`` does this for a whole loop; synced-store supports
3.11 and needs it for one call: a session sending a committed change from inside the commit's
fan-out. With uvicorn a WebSocket send writes to the socket without suspending, so the frame
leaves in the same loop turn as the commit and no sender task is woken per connection per
commit; a send that does suspend (a server that waits for the socket to drain) goes on in its
own task, so the committer never waits for one slow client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` now until it finishes (returns None) or first suspends (returns the task
    that runs the rest). An exception raised before the first suspension propagates."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_finish(coro, waiting))


async def _finish(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    await _Resume(coro, waiting)


class _Resume:
    """Awaiting this drives ``coro`` on from the point where it yielded ``waiting`` (a future,
    already marked as being awaited, or None for a bare yield): the task sees exactly what a
    task running ``coro`` from the start would have seen."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, None, None]:
        waiting = self._waiting
        while True:
            try:
                yield waiting
            except BaseException as exc:  # e.g. the task was cancelled: pass it in
                try:
                    waiting = self._coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = self._coro.send(None)
                except StopIteration:
                    return
