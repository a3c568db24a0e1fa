"""Every wire message as a typed class: one ``msgspec.Struct`` per message, both directions.

Client → server: :class:`Connect`, :class:`Push` (of :class:`Mutation`), :class:`Action`,
:class:`Pull`. Server → client: :class:`Connected`, :class:`Poke` (its ``patch`` of
:class:`SetOp`, :class:`DelOp` and :class:`MergeOp`, its ``errors`` of
:class:`MutationErrorReport`, its ``bind`` of :class:`Binding`), :class:`PushResponse`,
:class:`ActionResult`, :class:`Error`; append frames are JSON arrays (protocol/append.py).

The JSON shape of each class is the wire format of docs/protocol.md: ``type`` (``op`` for patch
ops) is the tag, fields at their defaults are left out. Encode with
:func:`synced_store.protocol.codec.encode`; decode with ``decode_client_message`` /
``decode_server_message``. A server that embeds JSON it already holds (a row value as stored)
puts a ``msgspec.Raw`` where an op or a value goes: the encoder copies its bytes as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import msgspec

__all__ = [
    "SKIP",
    "Action",
    "ActionResult",
    "Binding",
    "ClientMessage",
    "Connect",
    "Connected",
    "DelOp",
    "Error",
    "MergeOp",
    "Mutation",
    "MutationErrorReport",
    "PatchOp",
    "Poke",
    "Pull",
    "Push",
    "PushResponse",
    "ServerMessage",
    "SetOp",
    "action_failed",
    "raw_ops",
]


class _Message(msgspec.Struct, tag_field="type", omit_defaults=True, kw_only=True):
    """Base of every frame: tagged by ``type``; defaults are not written."""


class _Op(msgspec.Struct, tag_field="op", omit_defaults=True, kw_only=True):
    """Base of patch ops: tagged by ``op``; ``ns`` and ``sk`` left out when empty."""


# -- client → server ---------------------------------------------------------------------


class Connect(_Message, tag="connect"):
    """The first frame of a connection."""

    protocol_version: int
    schema_version: int
    client_id: str
    token: str | None = None
    #: The instance version the client's snapshot reflects (None: no data).
    cookie: int | None = None
    #: Highest mutation id whose effects are in the client's snapshot.
    last_mutation_id: int | None = None


#: Mutation name of a no-op marker: the server advances ``last_mutation_id`` and runs nothing
#: (a mutation superseded by a later one with the same ``pending_mutation_dedupe_key``).
SKIP = "$skip"


class Mutation(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One pushed mutation: ``id`` (consecutive within a push), mutator ``name``, ``args``."""

    id: int
    name: str
    args: Any
    #: The schema version it was made under, when older than the connection's.
    v: int | None = None


class Push(_Message, tag="push"):
    """Mutations for the server to run, in id order."""

    mutations: list[Mutation]


class Action(_Message, tag="action"):
    """Run action ``name`` now; answered by an :class:`ActionResult` with ``request_id``."""

    request_id: str
    name: str
    input: Any
    after_mutation_id: int | None = None


class Pull(_Message, tag="pull"):
    """Send everything since the session's cookie again (a catch-up poke)."""


ClientMessage = Connect | Push | Action | Pull


# -- patch ops -----------------------------------------------------------------------------


class SetOp(_Op, tag="set"):
    """Upsert row ``(ns, t, k)`` with sort key ``sk`` and value ``v``."""

    t: str
    k: str
    v: Any
    ns: str = ""
    sk: str = ""


class DelOp(_Op, tag="del"):
    """Delete row ``(ns, t, k)`` (no-op if absent)."""

    t: str
    k: str
    ns: str = ""


class MergeOp(_Op, tag="merge"):
    """Change the value the receiver holds: append each suffix of ``append`` to its string
    field, then set the fields of ``set`` and remove those in ``unset``."""

    t: str
    k: str
    ns: str = ""
    sk: str = ""
    append: dict[str, str] | None = None
    set: dict[str, Any] | None = None
    unset: list[str] | None = None


PatchOp = SetOp | DelOp | MergeOp


def raw_ops(ops: Iterable[Any]) -> list[PatchOp]:
    """Ops a server already holds encoded (text or bytes, as stored), for a poke's ``patch``:
    they are written as they are. Typed as ops, which is what they decode to."""
    return cast(list[PatchOp], [o if type(o) is msgspec.Raw else msgspec.Raw(o) for o in ops])


# -- server → client -----------------------------------------------------------------------


class MutationErrorReport(msgspec.Struct, kw_only=True):
    """A pushed mutation the server rejected for good (its effects were rolled back)."""

    id: int
    name: str
    kind: str
    message: str


class Binding(msgspec.Struct, array_like=True):
    """``[handle, ns, table, item, field, sort_key]``: names a streamed row's string field for
    the append frames that follow (protocol/append.py)."""

    handle: int
    ns: str
    table: str
    item: str
    field: str
    sort_key: str


class Connected(_Message, tag="connected"):
    """The handshake succeeded."""

    client_id: str
    user_id: str
    last_mutation_id: int
    instance_id: str
    schema_version: int


class Poke(_Message, tag="poke"):
    """Rows for the client: a commit poke, or one part of a catch-up (docs/protocol.md)."""

    #: The ops, in order (always present, possibly empty).
    patch: list[PatchOp]
    cookie: int | None = None
    base_cookie: int | None = None
    last_mutation_id: int | None = None
    errors: list[MutationErrorReport] | None = None
    #: A catch-up's parts say False, its last one True; a commit poke leaves it out (None),
    #: which means True.
    final: bool | None = None
    #: The patch is the complete visible state (first part of a catch-up only).
    reset: bool = False
    bind: list[Binding] | None = None
    #: The last part of a windowed reset: ``[[ns, table, sort_key, item_key], ...]``, the
    #: oldest row sent of each window that left older rows out (docs/protocol.md).
    windows: list[list[str]] | None = None


class PushResponse(_Message, tag="push_response"):
    """The push was processed up to ``last_mutation_id`` (informational)."""

    last_mutation_id: int


class ActionResult(_Message, tag="action_result"):
    """The outcome of an :class:`Action`: ``ok`` with ``output``, or ``kind`` and ``error``."""

    request_id: str
    ok: bool
    output: Any = None
    kind: str | None = None
    error: str | None = None


def action_failed(request_id: str, kind: str, error: str) -> ActionResult:
    """The :class:`ActionResult` of an action that did not run or did not succeed."""
    return ActionResult(request_id=request_id, ok=False, kind=kind, error=error)


class Error(_Message, tag="error"):
    """A recoverable condition (``mutation_id_gap``, ``storage_busy``), or the reason sent
    right before the server closes the connection."""

    kind: str
    message: str


ServerMessage = Connected | Poke | PushResponse | ActionResult | Error
