"""The client's half of an app: the schema and the mutator handlers, nothing server-side.

``define_client_config(schema=..., mutators=...)`` is what a client module builds when it must
not import the server's code (actions, services, hooks): ``synced_store.client.connect`` and
the browser run with it. A :class:`~synced_store.schema.BackendConfig` extends it with the
server's parts, so a client also accepts a backend config. This module imports only the
standard library and :mod:`synced_store.errors` (``schema.py`` imports it).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import SchemaError

if TYPE_CHECKING:
    from .schema import Schema

__all__ = ["HOOK_NAMES", "ClientConfig", "check_handlers", "check_hooks", "define_client_config"]

#: The system hooks ``define_backend_config(hooks=...)`` takes (docs/api.md, "Members").
HOOK_NAMES = ("on_init", "on_add_users", "on_remove_users")


@dataclass(frozen=True)
class ClientConfig:
    """What a client runs: the schema and the mutator handlers. Built by
    :func:`define_client_config`; a :class:`~synced_store.schema.BackendConfig` is one too."""

    schema: Schema
    mutators: Mapping[str, Callable[[Any, Any], Awaitable[Any]]]


def check_handlers(
    schema: Schema,
    mutators: Mapping[str, Callable[..., Any]],
    actions: Mapping[str, Callable[..., Any]] | None,
) -> None:
    """Raise :class:`SchemaError` unless every declared mutator (and action, when ``actions``
    is given) has an async handler and every handler is declared."""
    pairs: list[tuple[str, Mapping[str, Any], Mapping[str, Callable[..., Any]]]] = [
        ("mutator", schema.mutators, mutators)
    ]
    if actions is not None:
        pairs.append(("action", schema.actions, actions))
    for kind, decls, handlers in pairs:
        missing = sorted(set(decls) - set(handlers))
        extra = sorted(set(handlers) - set(decls))
        if missing:
            raise SchemaError(f"no handler for declared {kind}(s): {', '.join(missing)}")
        if extra:
            raise SchemaError(f"{kind} handler(s) not declared in the schema: {', '.join(extra)}")
        for name, fn in handlers.items():
            if not inspect.iscoroutinefunction(fn):
                raise SchemaError(f"{kind} {name!r} must be an async function (async def)")


def check_hooks(hooks: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hooks as a dict; raises :class:`SchemaError` for an unknown name or a sync function."""
    if hooks is not None and not isinstance(hooks, Mapping):
        raise SchemaError(f"hooks must be a dict of {', '.join(HOOK_NAMES)}")
    out: dict[str, Any] = {}
    for name, fn in (hooks or {}).items():
        if name not in HOOK_NAMES:
            raise SchemaError(f"unknown hook {name!r} (hooks: {', '.join(HOOK_NAMES)})")
        if not inspect.iscoroutinefunction(fn):
            raise SchemaError(f"hook {name!r} must be an async function (async def)")
        out[name] = fn
    return out


def define_client_config(
    schema: Schema, mutators: Mapping[str, Callable[[Any, Any], Awaitable[Any]]]
) -> ClientConfig:
    """The config a client runs with: ``schema`` and a handler for every declared mutator.

    A module that builds it imports only the schema and the mutators, so a client
    (``synced_store.client.connect``, the browser) never imports actions, services or hooks.
    """
    check_handlers(schema, mutators, None)
    return ClientConfig(schema=schema, mutators=dict(mutators))
