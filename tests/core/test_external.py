"""``ctx.external_store`` / ``ctx.mutate_external`` on a client pass: validated, no effect."""

from __future__ import annotations

from typing import Any

import pytest

from external_app import backend
from synced_store.core.client_engine import ClientEngine
from synced_store.core.context import MutationContext, run_sync
from synced_store.core.external import MAX_EXTERNAL_MUTATIONS, check_instance_id
from synced_store.errors import PermissionDeniedError, QuotaExceededError, ValidationError


def engine() -> ClientEngine:
    return ClientEngine(backend, user_id="alice", client_id="c1")


def test_a_client_pass_records_nothing_external_and_reads_empty() -> None:
    e = engine()
    e.mutate("createRoom", {"lobby": "lobby", "id": "r", "title": "t"})
    # The optimistic pass ran: its own row is there, and nothing else happened.
    assert e.query(lambda ctx: ctx.table("notes").get("created")) == {"text": "t"}
    e.mutate("readLobby", {"lobby": "lobby"})
    seen = e.query(lambda ctx: ctx.private_of_user("alice").table("notes").get("seen-client"))
    got = eval(seen["text"])
    assert got["rooms"] == []
    assert got["public"] == []
    assert got["mine"] == []
    assert got["refused"] == ["other:PermissionDeniedError", "server:PermissionDeniedError"]


def ctx_of(e: ClientEngine, source: dict[str, Any] | None = None) -> MutationContext:
    return MutationContext(
        backend.schema,
        e.store,
        "alice",
        is_server=False,
        source=source,  # type: ignore[arg-type]
    )


def test_arguments_are_validated_on_every_pass() -> None:
    ctx = ctx_of(engine())
    with pytest.raises(ValidationError, match="invalid instance id"):
        run_sync(ctx.mutate_external("a/b", "addRoom", {"id": "x", "title": "t"}))
    with pytest.raises(ValidationError, match="input for mutator 'addRoom'"):
        run_sync(ctx.mutate_external("lobby", "addRoom", {"id": 1}))
    with pytest.raises(Exception, match="unknown mutator"):
        run_sync(ctx.mutate_external("lobby", "nope", {}))
    for _ in range(MAX_EXTERNAL_MUTATIONS):
        run_sync(ctx.mutate_external("lobby", "addRoom", {"id": "x", "title": "t"}))
    assert all(call == {} for call in ctx.external_calls)  # nothing to deliver from a client
    with pytest.raises(QuotaExceededError):
        run_sync(ctx.mutate_external("lobby", "addRoom", {"id": "x", "title": "t"}))


def test_delivered_mutations_may_not_mutate_external() -> None:
    ctx = ctx_of(engine(), {"type": "external-store", "user_id": "alice", "store": {}})
    with pytest.raises(PermissionDeniedError, match="one level deep"):
        run_sync(ctx.mutate_external("lobby", "addRoom", {"id": "x", "title": "t"}))


@pytest.mark.parametrize("bad", ["", ".x", "a..b", "a/b", "x" * 129, 5, None])
def test_instance_ids(bad: Any) -> None:
    with pytest.raises(ValidationError):
        check_instance_id(bad)
    assert check_instance_id("room-1.a_b") == "room-1.a_b"
