"""Cross-instance reads and writes from a context: ``ctx.external_store`` and
``ctx.mutate_external`` (spec §4.7).

Both are server effects. On a client pass (optimistic or replay) ``external_store(id)`` is a
stub whose tables are empty and ``mutate_external`` only validates its arguments: the client
does nothing external, and the server's authoritative pass does it. On the server the host
plugs an :class:`ExternalAccess` into the context (``ctx.external_access``): reads then go to
the other instance's committed rows, as the calling user may see them, and each
``mutate_external`` call is recorded in ``ctx.external_calls`` and written by the server into
the durable outbox in the calling mutation's own transaction (server/external.py delivers it).

This module does no I/O.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import PermissionDeniedError, QuotaExceededError, ValidationError

if TYPE_CHECKING:
    from ..schema import Schema
    from .context import AsyncTx
    from .external_store import ExternalStore

__all__ = [
    "EXTERNAL_JOB",
    "EXTERNAL_READ_TIMEOUT",
    "MAX_EXTERNAL_MUTATIONS",
    "MAX_EXTERNAL_READ_BYTES",
    "MAX_EXTERNAL_READ_ITEMS",
    "ExternalAccess",
    "ExternalMixin",
    "check_instance_id",
]

#: Most ``mutate_external`` calls one mutation (or one action) may make (spec: 200 targets).
MAX_EXTERNAL_MUTATIONS = 200
#: Most rows one read (a scan, ``entries()``...) of an external table returns.
MAX_EXTERNAL_READ_ITEMS = 1000
#: Most bytes of row JSON one read of an external table returns.
MAX_EXTERNAL_READ_BYTES = 1024 * 1024
#: Seconds an external read (opening the other instance included) may take.
EXTERNAL_READ_TIMEOUT = 5.0
#: The outbox job that delivers one external mutation (a built-in job, never an app action).
EXTERNAL_JOB = "$external"

_INSTANCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_instance_id(instance_id: Any) -> str:
    """``instance_id`` if it is a valid instance id (1-128 chars of ``[A-Za-z0-9_.-]``, as
    storage accepts), else :class:`ValidationError`."""
    if (
        not isinstance(instance_id, str)
        or not _INSTANCE_RE.fullmatch(instance_id)
        or ".." in instance_id
    ):
        raise ValidationError(f"invalid instance id {instance_id!r:.80}")
    return instance_id


class ExternalAccess(Protocol):
    """What a server plugs into a context for ``external_store``."""

    def reader(self, instance_id: str, user_id: str, *, trusted: bool = False) -> AsyncTx:
        """A read-only transaction over the committed rows of ``instance_id`` for ``user_id``
        (an instance that does not exist reads as empty); released when the context ends.
        Unless ``trusted`` (a system hook), its first read checks that ``user_id`` may open
        the instance (PermissionDeniedError if not)."""


class ExternalMixin:
    """``external_store`` and ``mutate_external`` for mutation and action contexts."""

    schema: Schema
    user_id: str
    is_server: bool
    source: dict[str, Any]
    #: Plugged in by the server (None on clients: reads are empty, writes do nothing).
    external_access: ExternalAccess | None = None

    @property
    def external_calls(self) -> list[dict[str, Any]]:
        """The ``mutate_external`` calls of this context, as outbox job inputs (server)."""
        calls: list[dict[str, Any]] | None = self.__dict__.get("_external_calls")
        if calls is None:
            calls = self.__dict__["_external_calls"] = []
        return calls

    def external_store(self, instance_id: str) -> ExternalStore:
        """Read-only tables of instance ``instance_id``, as this context's user sees them
        there. Server-side only in effect: on a client pass every table is empty."""
        from .external_store import EmptyTx, ExternalStore  # it imports context, which imports us

        check_instance_id(instance_id)
        access = self.external_access
        if access is None or not self.is_server:
            return ExternalStore(self.schema, EmptyTx(), self.user_id, instance_id)
        trusted = bool(getattr(self, "is_system", False))  # a hook: the trusted system scope
        tx = access.reader(instance_id, self.user_id, trusted=trusted)
        return ExternalStore(self.schema, tx, self.user_id, instance_id)

    async def mutate_external(self, instance_id: str, mutator: str, input: Any) -> None:
        """Run mutator ``mutator`` with ``input`` in instance ``instance_id``, once, after this
        mutation commits (an outbox job, like ``enqueue_action``). The mutator runs there as
        this user, with ``ctx.source = {"type": "external-store", "user_id", "store":
        {"instance_id": <this instance>}}``, and may not call ``mutate_external`` itself
        (depth 1). Arguments are validated on every pass; on a client pass nothing else
        happens (a server-only effect). At most ``MAX_EXTERNAL_MUTATIONS`` per mutation."""
        if self.source.get("type") == "external-store":
            raise PermissionDeniedError(
                "a mutation delivered from another instance may not call mutate_external "
                "(external mutations are one level deep)"
            )
        from .context import json_input

        check_instance_id(instance_id)
        mdef = self.schema.mutator(mutator)
        args = json_input(mdef.input_encode, input, f"input for mutator {mutator!r}")
        calls = self.external_calls
        if len(calls) >= MAX_EXTERNAL_MUTATIONS:
            raise QuotaExceededError(
                f"at most {MAX_EXTERNAL_MUTATIONS} mutate_external calls per mutation"
            )
        if self.is_server and self.external_access is not None:
            # The idempotency key: recorded in the target's transaction with the effects.
            calls.append(
                {"instance": instance_id, "mutator": mutator, "input": args, "key": _key()}
            )
        else:
            calls.append({})  # counted against the limit on every pass, written on none


def _key() -> str:
    return uuid.uuid4().hex
