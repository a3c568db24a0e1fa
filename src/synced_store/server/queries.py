"""Built-in read queries: a client calls them like an action, by a name starting with ``$``.

They travel as ordinary ``action`` / ``action_result`` frames (docs/protocol.md), so every
client that can call an action (the Python client, the browser's shell and engine) can call
them, but they need no app action and no job slot: a query reads the instance as the calling
session's user may see it and answers at once. Each query registers itself with
:func:`register`; the endpoint routes every ``$`` name here (:func:`call`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import SyncedStoreError
from ..protocol.codes import ErrorKind
from ..protocol.messages import Action, ActionResult, action_failed

if TYPE_CHECKING:
    from .instance import Instance
    from .session import Session

__all__ = ["QUERY_PREFIX", "QueryHandler", "call", "is_query", "register"]

log = logging.getLogger("synced_store.server")

QUERY_PREFIX = "$"
"""Action names starting with this are built-in queries, never app actions."""

QueryHandler = Callable[["Instance", "Session", Any], Awaitable[Any]]
"""``handler(instance, session, input) -> output`` (JSON); raises a
:class:`~synced_store.errors.SyncedStoreError` for a clear error to the caller."""

_QUERIES: dict[str, QueryHandler] = {}


def register(name: str) -> Callable[[QueryHandler], QueryHandler]:
    """Decorator: make ``handler`` the built-in query ``name`` (which starts with ``$``)."""
    if not name.startswith(QUERY_PREFIX):
        raise ValueError(f"a built-in query's name starts with {QUERY_PREFIX!r}: {name!r}")

    def deco(handler: QueryHandler) -> QueryHandler:
        _QUERIES[name] = handler
        return handler

    return deco


def is_query(name: str) -> bool:
    """Whether an ``action`` frame named ``name`` is a built-in query."""
    return name.startswith(QUERY_PREFIX)


async def call(inst: Instance, session: Session, msg: Action) -> ActionResult:
    """Answer a built-in query: its output, or ``unknown_name`` / the error's kind."""
    handler = _QUERIES.get(msg.name)
    if handler is None:
        return action_failed(msg.request_id, ErrorKind.UNKNOWN_NAME, f"unknown query {msg.name!r}")
    try:
        out = await handler(inst, session, msg.input)
    except SyncedStoreError as exc:
        return action_failed(msg.request_id, exc.kind, str(exc))
    return ActionResult(request_id=msg.request_id, ok=True, output=out)


# The built-in queries register themselves on import (after ``register`` exists).
from . import search as _search  # noqa: E402,F401
