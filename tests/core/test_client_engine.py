"""ClientEngine, sans I/O: optimistic mutations, rebase on pokes, subscriptions.

Server messages are built by hand; nothing here touches a socket or an event loop.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from synced_store import (
    ProtocolError,
    UnknownNameError,
    ValidationError,
    define_backend_config,
    define_migration,
    define_schema,
    table,
)
from synced_store.core.client_engine import SKIP, ClientEngine
from synced_store.core.context import MutationContext, ReadContext, copy_json, run_sync
from synced_store.core.events import (
    Confirmed,
    EngineEvent,
    MutationRejected,
    ServerError,
    SessionStarted,
    SnapshotUpdated,
)
from synced_store.protocol import PROTOCOL_VERSION
from synced_store.protocol.codec import frame_json

from .app import (
    App,
    CounterRow,
    Inc,
    MemoryTx,
    SetCounter,
    connected_engine,
    del_op,
    feed,
    make_app,
    poke,
    pub,
    schema,
    sent,
    set_op,
)


@pytest.fixture
def app() -> App:
    return make_app()


def outcomes(engine: ClientEngine) -> list[EngineEvent]:
    """The events about mutations and errors (not session starts or snapshot updates)."""
    return [
        e for e in engine.events_received() if not isinstance(e, SessionStarted | SnapshotUpdated)
    ]


def updates(engine: ClientEngine) -> list[SnapshotUpdated]:
    """The snapshot updates among the events (the others are dropped)."""
    return [e for e in engine.events_received() if isinstance(e, SnapshotUpdated)]


def counter(engine: ClientEngine, key: str) -> int | None:
    async def q(ctx: ReadContext) -> int | None:
        row = await ctx.table("counters").get(key)
        return None if row is None else row["value"]

    return engine.query(q)


def item_texts(engine: ClientEngine) -> list[tuple[str, str, str]]:
    async def q(ctx: ReadContext) -> list[tuple[str, str, str]]:
        return [(k.sort_key, k.item_key, v["text"]) for k, v in await ctx.table("items").entries()]

    return engine.query(q)


def snapshot(engine: ClientEngine) -> dict[tuple[str, str], Any]:
    return {(k.table, k.item): (sk, v) for k, sk, v in engine.snapshot_rows()}


def counters(**values: int) -> list[dict[str, Any]]:
    return [set_op("counters", k, {"value": v}) for k, v in values.items()]


class Watch:
    """A subscription that counts its query runs and records its callbacks."""

    def __init__(self, engine: ClientEngine, fn: Callable[[ReadContext], Any]) -> None:
        self.runs = 0
        self.calls: list[Any] = []

        async def wrapped(ctx: ReadContext) -> Any:
            self.runs += 1
            return await fn(ctx)

        self.sub = engine.subscribe(wrapped, self.calls.append)

    @property
    def result(self) -> Any:
        return self.sub.result


def watch_counter(engine: ClientEngine, key: str) -> Watch:
    async def q(ctx: ReadContext) -> Any:
        return await ctx.table("counters").get(key)

    return Watch(engine, q)


# -- connection and push ----------------------------------------------------------------------


def test_connect_message(app: App) -> None:
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    # Fields at their defaults (no cookie yet) are left out: the server reads them as null.
    assert frame_json(engine.connect_frame("tok")) == {
        "type": "connect",
        "protocol_version": PROTOCOL_VERSION,
        "schema_version": 3,
        "client_id": "c1",
        "token": "tok",
        "last_mutation_id": 0,
    }
    assert not engine.connected
    assert not engine.has_server_data


def test_optimistic_mutate_queues_a_push(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    m = engine.mutate("increment", {"key": "a"})
    assert m.id == 1
    assert counter(engine, "a") == 2
    assert [p.id for p in engine.pending] == [1]
    assert sent(engine) == [
        {"type": "push", "mutations": [{"id": 1, "name": "increment", "args": {"key": "a"}}]}
    ]
    assert sent(engine) == []  # drained
    engine.mutate("increment", {"key": "a", "amount": 5})
    assert counter(engine, "a") == 7
    assert sent(engine) == [
        {
            "type": "push",
            "mutations": [{"id": 2, "name": "increment", "args": {"key": "a", "amount": 5}}],
        }
    ]
    assert outcomes(engine) == []


def test_mutate_offline_pushes_everything_on_connect(app: App) -> None:
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    engine.mutate("setCounter", {"key": "a", "value": 1})
    engine.mutate("setCounter", {"key": "b", "value": 2})
    assert sent(engine) == []
    assert counter(engine, "b") == 2
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    assert engine.connected
    [push] = sent(engine)
    assert [m["id"] for m in push["mutations"]] == [1, 2]
    engine.disconnected()
    assert not engine.connected
    engine.mutate("setCounter", {"key": "c", "value": 3})
    assert sent(engine) == []
    # The server already has mutation 1: only 2 and 3 are pushed again.
    feed(engine, {"type": "connected", "last_mutation_id": 1})
    [push] = sent(engine)
    assert [m["id"] for m in push["mutations"]] == [2, 3]


def test_unsent_mutations_with_a_dedupe_key_travel_as_skip_markers(app: App) -> None:
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    for v in (1, 2, 3):
        engine.mutate("setCounter", {"key": "a", "value": v}, dedupe_key="cursor")
    engine.mutate("increment", {"key": "b"})
    engine.mutate("setCounter", {"key": "a", "value": 4}, dedupe_key="cursor")
    engine.mutate("setCounter", {"key": "c", "value": 1}, dedupe_key="other")
    assert counter(engine, "a") == 4  # every mutation still applies locally
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    [push] = sent(engine)
    assert push["mutations"] == [
        {"id": 1, "name": "setCounter", "args": {"key": "a", "value": 1}},
        {"id": 2, "name": SKIP, "args": None},
        {"id": 3, "name": SKIP, "args": None},
        {"id": 4, "name": "increment", "args": {"key": "b"}},
        {"id": 5, "name": "setCounter", "args": {"key": "a", "value": 4}},
        {"id": 6, "name": "setCounter", "args": {"key": "c", "value": 1}},
    ]
    # The server confirms through a marker: the view is unchanged.
    feed(engine, poke(None, 1, counters(a=1), 3))
    assert [m.id for m in engine.pending] == [4, 5, 6]
    assert counter(engine, "a") == 4
    # Connected, each mutation goes out at once: nothing to supersede.
    engine.mutate("setCounter", {"key": "a", "value": 5}, dedupe_key="cursor")
    engine.mutate("setCounter", {"key": "a", "value": 6}, dedupe_key="cursor")
    assert [m["name"] for p in sent(engine) for m in p["mutations"]] == [
        "setCounter",
        "setCounter",
    ]


def test_mutate_with_invalid_input_or_unknown_name_queues_nothing(app: App) -> None:
    engine = connected_engine(app)
    with pytest.raises(ValidationError):
        engine.mutate("increment", {"key": 5})
    with pytest.raises(UnknownNameError):
        engine.mutate("nope", {})
    assert engine.pending == []
    assert engine.next_mutation_id == 1
    assert sent(engine) == []


def test_mutate_with_unencodable_args_queues_nothing(app: App) -> None:
    engine = connected_engine(app)
    with pytest.raises(ValidationError):
        engine.mutate("increment", {"key": "bad \udcff"})
    assert engine.pending == []
    assert sent(engine) == []


def test_mutator_raising_on_first_run_queues_nothing(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    app.flags["fail"] = True
    with pytest.raises(RuntimeError, match="flaky"):
        engine.mutate("flaky", {"key": "a"})
    assert engine.pending == []
    assert counter(engine, "a-flaky") is None
    assert sent(engine) == []
    assert snapshot(engine) == {("counters", "a"): ("", {"value": 1})}


def test_query_accepts_sync_and_async_functions(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    assert engine.query(lambda ctx: ctx.user_id) == "alice"
    assert counter(engine, "a") == 1


def test_confirmation_of_mutations_never_sent_on_this_connection(app: App) -> None:
    """A poke may confirm mutations pushed on an earlier connection; they are not re-sent."""
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    engine.mutate("setCounter", {"key": "a", "value": 1})
    engine.mutate("setCounter", {"key": "b", "value": 2})
    engine.mutate("setCounter", {"key": "c", "value": 3})
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    sent(engine)
    engine.disconnected()
    engine.mutate("setCounter", {"key": "d", "value": 4})
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    feed(engine, poke(None, 1, counters(a=1, b=2), 2))  # poke before the push goes out
    [push] = sent(engine)
    assert [m["id"] for m in push["mutations"]] == [1, 2, 3, 4]
    assert [m.id for m in engine.pending] == [3, 4]
    assert [(m.id, m.name, m.args, m.schema_version) for m in engine.pending] == [
        (3, "setCounter", {"key": "c", "value": 3}, None),
        (4, "setCounter", {"key": "d", "value": 4}, None),
    ]


def test_server_messages(app: App) -> None:
    engine = connected_engine(app)
    feed(engine, {"type": "push_response", "last_mutation_id": 0})
    feed(engine, {"type": "error", "kind": "bad_message", "message": "nope"})
    assert outcomes(engine) == [ServerError("bad_message", "nope")]
    with pytest.raises(ProtocolError, match="malformed server frame"):
        feed(engine, {"type": "weird"})


# -- confirmation and rebase ----------------------------------------------------------------------


def test_poke_confirming_drops_pending_and_emits_confirmed(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("increment", {"key": "a"})
    engine.mutate("increment", {"key": "a"})
    sent(engine)
    feed(engine, poke(1, 2, counters(a=2), 1))
    assert [m.id for m in engine.pending] == [2]
    assert outcomes(engine) == [Confirmed((1,))]
    assert counter(engine, "a") == 3  # server's 2 + pending increment
    assert snapshot(engine) == {("counters", "a"): ("", {"value": 2})}
    assert engine.cookie == 2
    assert engine.last_mutation_id == 1
    feed(engine, poke(2, 3, counters(a=3), 2))
    assert engine.pending == []
    assert outcomes(engine) == [Confirmed((2,))]
    assert counter(engine, "a") == 3
    assert sent(engine) == []


def test_poke_with_an_empty_patch_still_confirms(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("setCounter", {"key": "a", "value": 1})  # no visible change on the server
    feed(engine, poke(1, 1, [], 1))
    assert engine.pending == []
    assert outcomes(engine) == [Confirmed((1,))]
    assert counter(engine, "a") == 1


def test_confirmed_mutation_whose_server_result_differs(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("increment", {"key": "a"})
    # Someone else's increment got in first on the server: a = 1 + 1 + 1.
    feed(engine, poke(1, 2, counters(a=3), 1))
    assert counter(engine, "a") == 3
    assert engine.pending == []


def test_confirmed_mutation_write_the_server_did_not_make_is_undone(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("setCounter", {"key": "new", "value": 5})
    # The server ran it differently and never created "new".
    feed(engine, poke(1, 2, [], 1))
    assert counter(engine, "new") is None
    assert snapshot(engine) == {("counters", "a"): ("", {"value": 1})}


def test_server_change_to_a_read_key_reruns_only_that_mutation(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1, b=1))
    engine.mutate("increment", {"key": "a"})
    engine.mutate("increment", {"key": "b"})
    assert app.calls["increment", "a"] == 1
    assert app.calls["increment", "b"] == 1
    feed(engine, poke(1, 2, counters(a=10), 0))
    assert counter(engine, "a") == 11  # re-run on top of the new base value
    assert counter(engine, "b") == 2
    assert app.calls["increment", "a"] == 2
    assert app.calls["increment", "b"] == 1  # unrelated: its writes are re-applied, not re-run
    assert snapshot(engine) == {
        ("counters", "a"): ("", {"value": 10}),
        ("counters", "b"): ("", {"value": 1}),
    }
    assert [m.id for m in engine.pending] == [1, 2]


def test_unrelated_server_change_reruns_nothing(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("increment", {"key": "a"})
    feed(engine, poke(1, 2, counters(z=7), 0))
    assert app.calls["increment", "a"] == 1
    assert counter(engine, "a") == 2
    assert counter(engine, "z") == 7
    assert snapshot(engine) == {
        ("counters", "a"): ("", {"value": 1}),
        ("counters", "z"): ("", {"value": 7}),
    }


def test_server_write_under_a_blind_pending_write_keeps_the_pending_value(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("setCounter", {"key": "a", "value": 5})  # reads nothing
    feed(engine, poke(1, 2, counters(a=9), 0))
    assert app.calls["setCounter", "a"] == 1
    assert counter(engine, "a") == 5
    assert snapshot(engine) == {("counters", "a"): ("", {"value": 9})}
    # A later increment reads the pending blind write, not the server's value.
    engine.mutate("increment", {"key": "a"})
    feed(engine, poke(2, 3, counters(a=20), 0))
    assert counter(engine, "a") == 6
    feed(engine, poke(3, 4, counters(a=5), 1))
    assert counter(engine, "a") == 6
    feed(engine, poke(4, 5, counters(a=6), 2))
    assert counter(engine, "a") == 6
    assert engine.pending == []


def test_chained_pending_mutations_rerun_in_order(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("increment", {"key": "a"})
    engine.mutate("increment", {"key": "a", "amount": 10})
    assert counter(engine, "a") == 12
    feed(engine, poke(1, 2, counters(a=100), 0))
    assert counter(engine, "a") == 111
    feed(engine, poke(2, 3, counters(a=101), 1))
    assert counter(engine, "a") == 111
    assert [m.id for m in engine.pending] == [2]


def test_server_delete_of_a_row_a_pending_mutation_read(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=5))
    engine.mutate("increment", {"key": "a"})
    feed(engine, poke(1, 2, [del_op("counters", "a")], 0))
    assert counter(engine, "a") == 1  # re-run against an absent row
    assert snapshot(engine) == {}


def test_rejected_mutation_emits_event_and_removes_its_effect(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("setCounter", {"key": "a", "value": 50})
    engine.mutate("increment", {"key": "b"})
    assert counter(engine, "a") == 50
    errors = [{"id": 1, "name": "setCounter", "kind": "invalid_input", "message": "too big"}]
    feed(engine, poke(1, 2, [], 1, errors=errors))
    events = outcomes(engine)
    assert MutationRejected(1, "setCounter", "invalid_input", "too big") in events
    rejected_at = events.index(MutationRejected(1, "setCounter", "invalid_input", "too big"))
    assert not any(isinstance(e, Confirmed) and 1 in e.mutation_ids for e in events[:rejected_at])
    assert counter(engine, "a") == 1
    assert counter(engine, "b") == 1
    assert [m.id for m in engine.pending] == [2]


def test_mutator_raising_during_replay_is_a_no_op_and_stays_pending(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("flaky", {"key": "a"})
    engine.mutate("increment", {"key": "b"})
    assert counter(engine, "a-flaky") == 100
    app.flags["fail"] = True
    feed(engine, poke(1, 2, counters(a=2), 0))  # "a" changed: flaky re-runs and raises
    assert app.calls["flaky", "a"] == 2
    assert counter(engine, "a-flaky") is None  # no partial write
    assert counter(engine, "b") == 1
    assert [m.id for m in engine.pending] == [1, 2]
    assert outcomes(engine) == []
    app.flags["fail"] = False
    feed(engine, poke(2, 3, counters(a=3), 0))  # re-runs again (it read "a"), now succeeds
    assert counter(engine, "a-flaky") == 300
    feed(engine, poke(3, 4, [set_op("counters", "a-flaky", {"value": 300})], 1))
    assert [m.id for m in engine.pending] == [2]
    assert counter(engine, "a-flaky") == 300


# -- pokes: reset, multi-part, merge, sequencing ----------------------------------------------


def test_reset_poke_replaces_the_snapshot_and_replays_pending(app: App) -> None:
    engine = connected_engine(app, rows=[*counters(a=1, b=2), set_op("items", "i", {"text": "x"})])
    engine.mutate("increment", {"key": "a"})
    w = watch_counter(engine, "b")
    feed(engine, poke(None, 9, counters(a=10, c=3), 0, reset=True))
    assert counter(engine, "a") == 11
    assert counter(engine, "b") is None
    assert counter(engine, "c") == 3
    assert item_texts(engine) == []
    assert snapshot(engine) == {
        ("counters", "a"): ("", {"value": 10}),
        ("counters", "c"): ("", {"value": 3}),
    }
    assert engine.cookie == 9
    assert w.calls == [None]
    assert [u.reset for u in updates(engine)] == [True]


def test_multi_part_poke_applies_atomically_at_the_final_part(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("increment", {"key": "a"})
    wa = watch_counter(engine, "a")
    wb = watch_counter(engine, "b")
    feed(engine, {"type": "poke", "final": False, "patch": counters(a=10)})
    feed(engine, {"type": "poke", "final": False, "patch": counters(b=20)})
    assert counter(engine, "a") == 2
    assert counter(engine, "b") is None
    assert engine.cookie == 1
    assert wa.calls == wb.calls == []
    feed(
        engine,
        {
            "type": "poke",
            "final": True,
            "base_cookie": 1,
            "cookie": 5,
            "last_mutation_id": 1,
            "patch": counters(c=30),
        },
    )
    assert counter(engine, "a") == 10
    assert counter(engine, "b") == 20
    assert counter(engine, "c") == 30
    assert engine.cookie == 5
    assert engine.pending == []
    assert wa.calls == [{"value": 10}]
    assert wb.calls == [{"value": 20}]


def test_multi_part_reset_poke(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1, b=1))
    feed(engine, {"type": "poke", "final": False, "reset": True, "patch": counters(a=2)})
    assert counter(engine, "b") == 1
    feed(engine, {"type": "poke", "base_cookie": 1, "cookie": 7, "patch": counters(c=3)})
    assert snapshot(engine) == {
        ("counters", "a"): ("", {"value": 2}),
        ("counters", "c"): ("", {"value": 3}),
    }


def test_a_reset_keeps_the_last_op_on_a_row(app: App) -> None:
    # A row deleted while a reset catch-up was being read travels as a `del` in the final part,
    # after the part that sent it: it must be gone, from the view and from what is persisted.
    engine = connected_engine(app, rows=counters(a=1))
    feed(engine, {"type": "poke", "final": False, "reset": True, "patch": counters(a=2, b=2)})
    engine.events_received()
    gone = {"op": "del", "t": "counters", "k": "a"}
    feed(engine, {"type": "poke", "cookie": 7, "patch": [gone, *counters(b=3)]})
    assert snapshot(engine) == {("counters", "b"): ("", {"value": 3})}
    [update] = [e for e in engine.events_received() if isinstance(e, SnapshotUpdated)]
    assert update.reset
    assert [(k.item, row) for k, row in update.rows] == [("b", ("", {"value": 3}))]


def test_errors_in_non_final_parts_are_reported_with_the_final_part(app: App) -> None:
    # A catch-up in bounded parts may spread the rejected-mutation reports over its parts.
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("setCounter", {"key": "a", "value": 50})  # 1: rejected (reported in part 1)
    engine.mutate("increment", {"key": "b"})  # 2: confirmed
    engine.mutate("setCounter", {"key": "c", "value": 7})  # 3: rejected (reported in part 2)
    engine.mutate("increment", {"key": "d"})  # 4: still pending
    e1 = {"id": 1, "name": "setCounter", "kind": "invalid_input", "message": "no"}
    e3 = {"id": 3, "name": "setCounter", "kind": "value_too_deep", "message": "deep"}
    feed(engine, {"type": "poke", "final": False, "patch": counters(x=1), "errors": [e1]})
    feed(engine, {"type": "poke", "final": False, "patch": counters(b=1), "errors": [e3]})
    assert outcomes(engine) == []  # nothing applies before the final part
    assert counter(engine, "a") == 50
    assert [m.id for m in engine.pending] == [1, 2, 3, 4]
    feed(
        engine,
        {
            "type": "poke",
            "final": True,
            "base_cookie": 1,
            "cookie": 9,
            "last_mutation_id": 3,
            "patch": [],
        },
    )
    events = outcomes(engine)
    assert [e for e in events if isinstance(e, MutationRejected)] == [
        MutationRejected(1, "setCounter", "invalid_input", "no"),
        MutationRejected(3, "setCounter", "value_too_deep", "deep"),
    ]
    assert Confirmed((1, 2, 3)) in events
    assert [m.id for m in engine.pending] == [4]
    assert counter(engine, "a") == 1  # the rejected mutations' effects are gone
    assert counter(engine, "c") is None
    assert counter(engine, "b") == 1  # the server's value (2 confirmed)
    assert counter(engine, "d") == 1  # pending, replayed
    assert counter(engine, "x") == 1


def test_errors_split_over_parts_and_the_final_part_are_each_reported_once(app: App) -> None:
    engine = connected_engine(app)
    for key in "abc":
        engine.mutate("increment", {"key": key})
    err = [
        {"id": i, "name": "increment", "kind": "mutator_error", "message": f"m{i}"}
        for i in (1, 2, 3)
    ]
    feed(engine, {"type": "poke", "final": False, "reset": True, "patch": [], "errors": [err[1]]})
    feed(engine, {"type": "poke", "final": False, "patch": [], "errors": [err[1], err[0]]})
    feed(
        engine,
        {
            "type": "poke",
            "final": True,
            "base_cookie": 1,
            "cookie": 4,
            "last_mutation_id": 3,
            "errors": [err[2]],
            "patch": counters(z=1),
        },
    )
    rejected = [e for e in engine.events_received() if isinstance(e, MutationRejected)]
    assert [(e.mutation_id, e.message) for e in rejected] == [(1, "m1"), (2, "m2"), (3, "m3")]
    assert engine.pending == []
    assert snapshot(engine) == {("counters", "z"): ("", {"value": 1})}


def test_errors_of_a_dropped_partial_poke_are_not_reported(app: App) -> None:
    engine = connected_engine(app)
    engine.mutate("increment", {"key": "a"})
    e1 = {"id": 1, "name": "increment", "kind": "mutator_error", "message": "x"}
    feed(engine, {"type": "poke", "final": False, "patch": [], "errors": [e1]})
    engine.disconnected()
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    sent(engine)
    feed(engine, poke(1, 2, [], 0))
    assert outcomes(engine) == []
    assert [m.id for m in engine.pending] == [1]


def test_disconnect_drops_a_partial_multi_part_poke(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    feed(engine, {"type": "poke", "final": False, "patch": counters(a=99)})
    engine.disconnected()
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    feed(engine, poke(1, 2, counters(b=2), 0))
    assert counter(engine, "a") == 1
    assert counter(engine, "b") == 2


LONG = "hello, this text is long enough"


def test_merge_op_appends_to_the_snapshot_not_the_view(app: App) -> None:
    engine = connected_engine(
        app,
        rows=[
            set_op(
                "items",
                "m",
                {"text": LONG},
            )
        ],
    )
    engine.mutate("appendText", {"id": "m", "suffix": " [local]"})
    assert item_texts(engine) == [("", "m", LONG + " [local]")]
    merge = {"op": "merge", "t": "items", "k": "m", "append": {"text": " more"}}
    feed(engine, poke(1, 2, [merge], 0))
    assert snapshot(engine) == {("items", "m"): ("", {"text": LONG + " more"})}
    assert item_texts(engine) == [("", "m", LONG + " more [local]")]
    assert app.calls["appendText", "m"] == 2
    merge2 = {"op": "merge", "t": "items", "k": "m", "append": {"text": " [local]"}}
    feed(engine, poke(2, 3, [merge2], 1))
    assert engine.pending == []
    assert item_texts(engine) == [("", "m", LONG + " more [local]")]


def test_merge_after_set_in_the_same_patch(app: App) -> None:
    engine = connected_engine(app)
    ops = [
        set_op("items", "m", {"text": LONG}),
        {"op": "merge", "t": "items", "k": "m", "append": {"text": "!"}},
    ]
    feed(engine, poke(1, 2, ops, 0))
    assert item_texts(engine) == [("", "m", LONG + "!")]


def test_out_of_sequence_poke_raises_and_changes_nothing(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("increment", {"key": "a"})
    sent(engine)
    w = watch_counter(engine, "a")
    before = (engine.snapshot_rows(), engine.cookie, engine.last_mutation_id)
    with pytest.raises(ProtocolError, match="out-of-sequence poke"):
        feed(engine, poke(7, 8, counters(a=50, b=1), 1))
    assert (engine.snapshot_rows(), engine.cookie, engine.last_mutation_id) == before
    assert counter(engine, "a") == 2
    assert counter(engine, "b") is None
    assert [m.id for m in engine.pending] == [1]
    assert outcomes(engine) == []
    assert w.calls == []
    # The next in-sequence poke still applies.
    feed(engine, poke(1, 2, counters(a=2), 1))
    assert counter(engine, "a") == 2
    assert engine.pending == []


def test_out_of_sequence_final_part_discards_the_earlier_parts(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    feed(engine, {"type": "poke", "final": False, "patch": counters(a=99)})
    with pytest.raises(ProtocolError):
        feed(engine, poke(5, 6, [], 0))
    feed(engine, poke(1, 2, counters(b=2), 0))
    assert counter(engine, "a") == 1
    assert counter(engine, "b") == 2


def test_poke_with_a_malformed_op_raises_and_changes_nothing(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    engine.mutate("setCounter", {"key": "a", "value": 5})
    w = watch_counter(engine, "a")
    before = engine.snapshot_rows()
    bad = {"op": "merge", "t": "items", "k": "missing", "append": {"text": "x"}}
    with pytest.raises(ProtocolError):
        feed(engine, poke(1, 2, [*counters(a=2), bad], 0))
    assert engine.snapshot_rows() == before
    assert counter(engine, "a") == 5  # the pending overlay is still applied
    assert w.calls == []


@pytest.mark.parametrize(
    "op",
    [
        {"op": "zap", "t": "counters", "k": "a"},
        {"op": "set", "k": "a", "v": 1},
        {"op": "set", "t": "counters", "k": 5, "v": 1},
        {"op": "merge", "t": "counters", "k": "nope", "append": {"x": "y"}},
    ],
)
def test_malformed_ops_raise_protocol_error(app: App, op: dict[str, Any]) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    with pytest.raises(ProtocolError):
        feed(engine, poke(1, 2, [op], 0))


def test_merge_in_a_reset_poke_is_a_protocol_error(app: App) -> None:
    engine = connected_engine(app, rows=[set_op("items", "m", {"text": LONG})])
    with pytest.raises(ProtocolError):
        feed(
            engine,
            poke(
                None,
                2,
                [{"op": "merge", "t": "items", "k": "m", "append": {"text": "x"}}],
                reset=True,
            ),
        )


# -- subscriptions --------------------------------------------------------------------------------


def test_subscription_fires_only_when_its_result_changes(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1, b=1))
    wa = watch_counter(engine, "a")
    assert wa.result == {"value": 1}
    assert wa.runs == 1
    assert wa.calls == []  # the first result is not delivered through the callback
    engine.mutate("increment", {"key": "b"})
    assert wa.runs == 1  # unrelated key: not even re-run
    engine.mutate("increment", {"key": "a"})
    assert wa.calls == [{"value": 2}]
    engine.mutate("setCounter", {"key": "a", "value": 2})  # same value: nothing changed
    assert wa.runs == 2
    assert wa.calls == [{"value": 2}]
    feed(engine, poke(1, 2, counters(b=5), 0))  # server change to another key
    assert wa.runs == 2
    feed(engine, poke(2, 3, counters(a=1), 0))  # view unchanged: pending writes still win
    assert wa.calls == [{"value": 2}]
    feed(engine, poke(3, 4, counters(a=2), 3))  # confirms everything; same view
    assert wa.calls == [{"value": 2}]
    feed(engine, poke(4, 5, counters(a=3), 3))
    assert wa.calls == [{"value": 2}, {"value": 3}]


def test_subscription_rerun_with_same_result_does_not_call_back(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))

    async def positive(ctx: ReadContext) -> bool:
        row = await ctx.table("counters").get("a")
        return row is not None and row["value"] > 0

    w = Watch(engine, positive)
    engine.mutate("increment", {"key": "a"})
    assert w.runs == 2
    assert w.calls == []
    engine.mutate("setCounter", {"key": "a", "value": -1})
    assert w.calls == [False]


def test_unsubscribe_stops_callbacks(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))
    w = watch_counter(engine, "a")
    engine.unsubscribe(w.sub)
    engine.mutate("increment", {"key": "a"})
    feed(engine, poke(1, 2, counters(a=5), 0))
    assert w.runs == 1
    assert w.calls == []


def test_subscription_callback_exception_does_not_break_the_engine(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    engine = connected_engine(app, rows=counters(a=1))

    def boom(_: Any) -> None:
        raise RuntimeError("callback failed")

    async def q(ctx: ReadContext) -> Any:
        return await ctx.table("counters").get("a")

    engine.subscribe(q, boom)
    w = watch_counter(engine, "a")
    engine.mutate("increment", {"key": "a"})
    assert w.calls == [{"value": 2}]
    assert "subscription callback raised" in caplog.text


def items_scan(engine: ClientEngine, **opts: Any) -> Watch:
    async def q(ctx: ReadContext) -> list[str]:
        return [k.item_key for k in await ctx.table("items").scan(**opts).keys()]

    return Watch(engine, q)


def items(*keys: str, sk: str = "") -> list[dict[str, Any]]:
    return [set_op("items", k, {"text": k}, sk=sk) for k in keys]


def test_scan_subscription_with_limit_reacts_inside_its_range_only(app: App) -> None:
    engine = connected_engine(app, rows=items("b", "d", "f", "h"))
    w = items_scan(engine, limit=2)
    assert w.result == ["b", "d"]
    engine.mutate("setItem", {"id": "z", "text": "z"})  # after the last row read
    engine.mutate("setItem", {"id": "g", "text": "g"})
    engine.mutate("deleteItem", {"id": "f"})
    assert w.runs == 1
    engine.mutate("setItem", {"id": "c", "text": "c"})  # inside the range
    assert w.calls == [["b", "c"]]
    engine.mutate("setItem", {"id": "a", "text": "a"})  # before the first row
    assert w.calls == [["b", "c"], ["a", "b"]]
    runs = w.runs
    engine.mutate("setItem", {"id": "b", "text": "changed"})  # value change inside the range
    assert w.runs == runs + 1
    assert len(w.calls) == 2  # keys unchanged: no callback
    feed(engine, poke(1, 2, items("x", "y"), 0))  # server inserts after the range
    assert w.runs == runs + 1
    feed(engine, poke(2, 3, items("aa"), 0))  # server insert inside the range
    assert w.calls[-1] == ["a", "aa"]


def test_scan_subscription_sees_rows_move_in_and_out_by_sort_key(app: App) -> None:
    engine = connected_engine(app, rows=[*items("p", "q", sk="m"), *items("r", sk="z")])
    w = items_scan(engine, prefix={"sort_key": "m"})
    assert w.result == ["p", "q"]
    engine.mutate("setItem", {"id": "r", "text": "r", "sk": "m"})  # moves in
    assert w.calls == [["p", "q", "r"]]
    engine.mutate("setItem", {"id": "p", "text": "p", "sk": "a"})  # moves out (backwards)
    assert w.calls[-1] == ["q", "r"]
    engine.mutate("setItem", {"id": "q", "text": "q", "sk": "zz"})  # moves out (forwards)
    assert w.calls[-1] == ["r"]
    n = w.runs
    engine.mutate("setItem", {"id": "p", "text": "p", "sk": "b"})  # moves, never inside
    assert w.runs == n
    feed(engine, poke(1, 2, items("r", sk="zzz"), 0))  # server moves it, pending moves it back
    assert w.calls[-1] == ["r"]
    # All confirmed; the server placed r elsewhere than this client did.
    final = [*items("p", sk="b"), *items("q", sk="zz"), *items("r", sk="zzz")]
    feed(engine, poke(2, 3, final, 4))
    assert engine.pending == []
    assert w.calls[-1] == []


def test_subscription_to_a_private_table(app: App) -> None:
    engine = connected_engine(app)

    async def q(ctx: ReadContext) -> Any:
        return await ctx.private_of_user("alice").table("counters").get("n")

    w = Watch(engine, q)
    feed(engine, poke(1, 2, [set_op("counters", "n", {"value": 1}, ns="u:bob")], 0))
    assert w.runs == 1
    feed(engine, poke(2, 3, [set_op("counters", "n", {"value": 1}, ns="u:alice")], 0))
    assert w.calls == [{"value": 1}]


def test_subscription_whose_query_raises_reports_the_error(app: App) -> None:
    engine = connected_engine(app)

    async def q(ctx: ReadContext) -> Any:
        return await ctx.private_of_user("bob").table("counters").get("n")

    sub = engine.subscribe(q, lambda _: None)
    assert isinstance(sub.result, Exception)


def test_subscription_query_raising_any_error_does_not_break_the_engine(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1))

    async def fragile(ctx: ReadContext) -> int:
        row = await ctx.table("counters").get("a")
        return 10 // row["value"]  # ZeroDivisionError when the value is 0

    broken = engine.subscribe(fragile, lambda _: None)
    w = watch_counter(engine, "a")
    m = engine.mutate("setCounter", {"key": "a", "value": 0})  # must not raise
    assert [p.id for p in engine.pending] == [m.id]
    assert w.calls == [{"value": 0}]
    assert isinstance(broken.result, ZeroDivisionError)
    feed(engine, poke(1, 2, counters(a=5), 0))  # must not raise either
    feed(engine, poke(2, 3, counters(a=5), 1))  # confirmed: a is 5 again
    assert broken.result == 2  # the subscription recovers: it is still indexed
    assert w.calls[-1] == {"value": 5}


# -- persistence ------------------------------------------------------------------------------


def test_snapshot_rows_exclude_pending_effects(app: App) -> None:
    engine = connected_engine(
        app, rows=[*counters(a=1, b=2), set_op("items", "i", {"text": "i"}, sk="s")]
    )
    engine.mutate("increment", {"key": "a"})
    engine.mutate("deleteItem", {"id": "i"})
    engine.mutate("setCounter", {"key": "new", "value": 9})
    engine.mutate("setItem", {"id": "j", "text": "j", "sk": "t"})
    assert counter(engine, "a") == 2
    assert item_texts(engine) == [("t", "j", "j")]
    assert sorted(engine.snapshot_rows()) == sorted(
        [
            (pub("counters", "a"), "", {"value": 1}),
            (pub("counters", "b"), "", {"value": 2}),
            (pub("items", "i"), "s", {"text": "i"}),
        ]
    )
    assert [(m.id, m.name, m.args) for m in engine.pending] == [
        (1, "increment", {"key": "a"}),
        (2, "deleteItem", {"id": "i"}),
        (3, "setCounter", {"key": "new", "value": 9}),
        (4, "setItem", {"id": "j", "text": "j", "sk": "t"}),
    ]


def test_restore_loads_snapshot_and_replays_pending(app: App) -> None:
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    w = watch_counter(engine, "a")
    rows = [(pub("counters", "a"), "", {"value": 10}), (pub("items", "i"), "s", {"text": "i"})]
    engine.restore(
        cookie=4,
        last_mutation_id=2,
        rows=rows,
        pending=[
            (2, "increment", {"key": "a"}),  # already in the snapshot: skipped
            (3, "increment", {"key": "a"}),
            (4, "gone", {}),  # no longer declared: dropped
            (5, "setCounter", {"key": "b", "value": 7}),
        ],
    )
    assert engine.cookie == 4
    assert engine.last_mutation_id == 2
    assert counter(engine, "a") == 11
    assert counter(engine, "b") == 7
    assert [m.id for m in engine.pending] == [3, 5]
    assert engine.next_mutation_id == 6
    assert sorted(engine.snapshot_rows()) == sorted(rows)
    assert w.calls == [{"value": 11}]
    # Pending mutations are pushed on connect, and the next mutation continues the ids.
    feed(engine, {"type": "connected", "last_mutation_id": 2})
    [push] = sent(engine)
    assert [m["id"] for m in push["mutations"]] == [3, 5]
    assert engine.mutate("increment", {"key": "a"}).id == 6
    assert frame_json(engine.connect_frame(None))["cookie"] == 4


def test_restore_keeps_dedupe_keys(app: App) -> None:
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    engine.restore(
        cookie=1,
        last_mutation_id=0,
        rows=[],
        pending=[
            (1, "setCounter", {"key": "a", "value": 1}, None, "k"),
            (2, "setCounter", {"key": "a", "value": 2}, None, "k"),
            (3, "setCounter", {"key": "a", "value": 3}, None, "k"),
        ],
    )
    assert counter(engine, "a") == 3
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    [push] = sent(engine)
    assert [m["name"] for m in push["mutations"]] == ["setCounter", SKIP, "setCounter"]


def test_restore_with_a_pending_mutation_that_raises(app: App) -> None:
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    app.flags["fail"] = True
    engine.restore(
        cookie=1,
        last_mutation_id=0,
        rows=[(pub("counters", "a"), "", {"value": 1})],
        pending=[(1, "flaky", {"key": "a"})],
    )
    assert [m.id for m in engine.pending] == [1]
    assert counter(engine, "a-flaky") is None
    assert engine.snapshot_rows() == [(pub("counters", "a"), "", {"value": 1})]


def migrating_backend(app: App) -> Any:
    """Version 3 of a schema whose 2to3 step turned ``incr {k}`` into ``increment``."""

    def old_incr(args: Any, emit: Any) -> None:
        emit("increment", {"key": args["k"], "amount": 2})

    def old_pair(args: Any, emit: Any) -> None:
        emit("setCounter", {"key": args["k"], "value": 7})
        emit("increment", {"key": args["k"]})

    s = define_schema(
        schema_version=3,
        tables={"counters": table(CounterRow)},
        mutators={"increment": {"input": Inc}, "setCounter": {"input": SetCounter}},
        migrations={
            "2to3": define_migration(migrate_pending_mutation={"incr": old_incr, "pair": old_pair})
        },
    )
    return define_backend_config(
        schema=s,
        mutators={
            "increment": app.backend.mutators["increment"],
            "setCounter": app.backend.mutators["setCounter"],
        },
    )


def test_restore_from_an_older_schema_replays_pending_through_migrations(app: App) -> None:
    engine = ClientEngine(migrating_backend(app), user_id="alice", client_id="c1")
    engine.restore(
        cookie=5,
        last_mutation_id=0,
        rows=[(pub("counters", "a"), "", {"value": 10})],
        pending=[
            (1, "incr", {"k": "a"}, 2),
            (2, "pair", {"k": "b"}, 2),
            (3, "increment", {"key": "a"}, 3),
            (4, "increment", {"key": "a"}),  # no version: the persisted schema_version
        ],
        schema_version=2,
    )
    # The old snapshot is dropped (the server sends everything again).
    assert engine.cookie is None
    assert engine.snapshot_rows() == []
    assert counter(engine, "a") == 2 + 1 + 1
    assert counter(engine, "b") == 8
    assert [m.id for m in engine.pending] == [1, 2, 3, 4]
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    [push] = sent(engine)
    assert push["mutations"] == [
        {"id": 1, "name": "incr", "args": {"k": "a"}, "v": 2},
        {"id": 2, "name": "pair", "args": {"k": "b"}, "v": 2},
        {"id": 3, "name": "increment", "args": {"key": "a"}},
        {"id": 4, "name": "increment", "args": {"key": "a"}, "v": 2},
    ]
    # A server update re-runs migrated mutations through the migration again.
    feed(engine, poke(None, 6, counters(a=100), 0, reset=True))
    assert counter(engine, "a") == 104
    assert counter(engine, "b") == 8


def test_restore_from_a_schema_without_a_migration_path_drops_everything(app: App) -> None:
    engine = ClientEngine(migrating_backend(app), user_id="alice", client_id="c1")
    engine.restore(
        cookie=5,
        last_mutation_id=3,
        rows=[(pub("counters", "a"), "", {"value": 10})],
        pending=[(4, "incr", {"k": "a"}, 1), (5, "increment", {"key": "a"}, 1)],
        schema_version=1,  # no 1to2 step
    )
    assert engine.pending == []
    assert engine.snapshot_rows() == []
    assert engine.cookie is None
    assert engine.next_mutation_id == 4


def test_bulk_and_reset_updates_leave_the_garbage_collector_enabled(app: App) -> None:
    engine = connected_engine(app)
    assert gc.isenabled()
    feed(engine, poke(None, 2, counters(a=1), 0, reset=True))
    assert gc.isenabled()
    bad = {"op": "merge", "t": "items", "k": "nope", "append": {"text": "x"}}
    with pytest.raises(ProtocolError):
        feed(engine, poke(None, 3, [bad], 0, reset=True))
    assert gc.isenabled()
    many = [set_op("any", f"k{i}", i) for i in range(1000)]
    feed(engine, poke(2, 4, many, 0))
    assert gc.isenabled()
    assert engine.query(lambda ctx: ctx.table("any").get("k999")) is not None


def test_snapshot_updates_list_the_applied_rows(app: App) -> None:
    engine = connected_engine(app, rows=counters(a=1, b=1))
    feed(engine, poke(1, 2, [*counters(a=2), del_op("counters", "b")], 0))
    assert updates(engine) == [
        SnapshotUpdated(
            False,
            [(pub("counters", "a"), ("", {"value": 2})), (pub("counters", "b"), None)],
            2,
            0,
        )
    ]


def test_has_server_data_after_first_poke(app: App) -> None:
    engine = ClientEngine(app.backend, user_id="alice", client_id="c1")
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    assert not engine.has_server_data
    feed(engine, poke(None, 1, [], 0))
    assert engine.has_server_data


# -- model-based: the view is always snapshot + replay of pending ------------------------------


class ModelServer:
    """A reference server: runs the same mutators on a MemoryStore and pokes changed rows."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.tx = MemoryTx()
        self.version = 1
        self.lmid = 0
        self.queue: list[dict[str, Any]] = []  # pushed, not yet processed
        self.dirty: set[Any] = set()
        self.errors: list[dict[str, Any]] = []

    def run(self, name: str, args: Any) -> None:
        tx = self.tx
        before = {k: (sk, v) for k, sk, v in tx.store.rows()}
        ctx = MutationContext(schema, tx, "server-user", is_server=True)
        mdef = schema.mutator(name)
        run_sync(self.app.backend.mutators[name](ctx, mdef.parse_input(args)))
        after = {k: (sk, v) for k, sk, v in tx.store.rows()}
        self.dirty.update(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))

    def rows(self) -> list[tuple[Any, str, Any]]:
        return sorted(self.tx.store.rows())

    def poke(self, base: int | None) -> list[dict[str, Any]]:
        ops = []
        for key in sorted(self.dirty):
            row = self.tx.store.get(key)
            if row is None:
                ops.append(del_op(key.table, key.item))
            else:
                ops.append(set_op(key.table, key.item, copy_json(row[1]), sk=row[0]))
        self.dirty.clear()
        self.version += 1
        return ops


KEYS = st.sampled_from(["a", "b"])
IDS = st.sampled_from(["x", "y", "z", "w"])
SKS = st.sampled_from(["", "1", "2"])
MUTATIONS = st.one_of(
    st.tuples(st.just("increment"), st.fixed_dictionaries({"key": KEYS})),
    st.tuples(
        st.just("setCounter"), st.fixed_dictionaries({"key": KEYS, "value": st.integers(0, 3)})
    ),
    st.tuples(
        st.just("setItem"),
        st.fixed_dictionaries({"id": IDS, "text": st.sampled_from(["t", "u"]), "sk": SKS}),
    ),
    st.tuples(st.just("deleteItem"), st.fixed_dictionaries({"id": IDS})),
    st.tuples(st.just("copyTop"), st.fixed_dictionaries({"key": KEYS})),
)


async def _q_counter(ctx: ReadContext) -> Any:
    return await ctx.table("counters").get("a")


async def _q_top2(ctx: ReadContext) -> Any:
    return await ctx.table("items").scan(limit=2).entries()


async def _q_sk1(ctx: ReadContext) -> Any:
    return await ctx.table("items").scan(prefix={"sort_key": "1"}).entries()


async def _q_last(ctx: ReadContext) -> Any:
    return await ctx.table("items").scan(reverse=True, limit=1, cursor="$last").entries()


async def _q_any(ctx: ReadContext) -> Any:
    return await ctx.table("any").entries()


QUERIES = [_q_counter, _q_top2, _q_sk1, _q_last, _q_any]


class RebaseMachine(RuleBasedStateMachine):
    """One engine against a reference server, with other writers and arbitrary interleavings.

    After every step: the snapshot equals what the server last sent, the view equals that
    snapshot with the pending mutations replayed in order, and every subscription's result
    equals a fresh run of its query.
    """

    def __init__(self) -> None:
        super().__init__()
        self.app = make_app()
        self.server = ModelServer(self.app)
        self.engine = ClientEngine(self.app.backend, user_id="alice", client_id="c1")
        feed(self.engine, {"type": "connected", "last_mutation_id": 0})
        feed(self.engine, poke(None, 1, [], 0))
        self.acked: list[tuple[Any, str, Any]] = []
        self.subs = [self.engine.subscribe(q, lambda _: None) for q in QUERIES]

    def drain(self) -> None:
        for msg in sent(self.engine):
            self.server.queue.extend(msg["mutations"])

    @rule(m=MUTATIONS)
    def client_mutates(self, m: tuple[str, dict[str, Any]]) -> None:
        self.engine.mutate(*m)
        self.drain()

    @rule(m=MUTATIONS)
    def another_client_mutates_on_the_server(self, m: tuple[str, dict[str, Any]]) -> None:
        self.server.run(*m)

    @rule(n=st.integers(1, 3), reject=st.booleans())
    def server_processes_pushes(self, n: int, reject: bool) -> None:
        for mut in self.server.queue[:n]:
            if reject:
                self.server.errors.append(
                    {"id": mut["id"], "name": mut["name"], "kind": "invalid_input", "message": "x"}
                )
            else:
                self.server.run(mut["name"], mut["args"])
            self.server.lmid = mut["id"]
        del self.server.queue[:n]

    @rule(parts=st.integers(1, 3))
    def server_pokes(self, parts: int) -> None:
        base = self.engine.cookie
        ops = self.server.poke(base)
        errors, self.server.errors = self.server.errors, []
        chunks = [ops[i::parts] for i in range(parts)]
        for chunk in chunks[:-1]:
            feed(self.engine, {"type": "poke", "final": False, "patch": chunk})
        final = poke(base, self.server.version, chunks[-1], self.server.lmid, final=True)
        if errors:
            final["errors"] = errors
        feed(self.engine, final)
        self.acked = self.server.rows()
        events = outcomes(self.engine)
        rejected = {e.mutation_id for e in events if isinstance(e, MutationRejected)}
        assert rejected == {e["id"] for e in errors}

    @rule()
    def server_resets(self) -> None:
        self.server.dirty.clear()
        ops = [set_op(k.table, k.item, copy_json(v), sk=sk) for k, sk, v in self.server.rows()]
        self.server.version += 1
        feed(self.engine, poke(None, self.server.version, ops, self.server.lmid, reset=True))
        self.acked = self.server.rows()
        self.engine.events_received()

    @invariant()
    def snapshot_is_what_the_server_sent(self) -> None:
        assert sorted(self.engine.snapshot_rows()) == self.acked

    @invariant()
    def view_is_snapshot_plus_pending(self) -> None:
        tx = MemoryTx()
        tx.store.load([(k, sk, copy_json(v)) for k, sk, v in self.acked])
        for m in self.engine.pending:
            ctx = MutationContext(schema, tx, "alice", is_server=False)
            run_sync(
                self.app.backend.mutators[m.name](ctx, schema.mutator(m.name).parse_input(m.args))
            )
        assert sorted(self.engine.store.rows()) == sorted(tx.store.rows())

    @invariant()
    def subscriptions_are_current(self) -> None:
        for sub, q in zip(self.subs, QUERIES, strict=True):
            assert sub.result == self.engine.query(q), q.__name__


TestRebaseAgainstModel = RebaseMachine.TestCase
TestRebaseAgainstModel.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- incremental table subscriptions ---------------------------------------------------------


def _table_sub(engine: Any) -> tuple[Any, list[tuple[list[str], dict[str, list[str]]]]]:
    calls: list[tuple[list[str], dict[str, list[str]]]] = []
    sub = engine.subscribe_table(
        "", "counters", lambda entries, diff: calls.append(([k.item_key for k, _ in entries], diff))
    )
    return sub, calls


def test_table_subscription_reports_small_and_large_updates_and_resets() -> None:
    from .app import connected_engine, make_app, poke, set_op
    from .app import del_op as del_

    app = make_app()
    engine = connected_engine(app, rows=[set_op("counters", "a", {"value": 1})])
    sub, calls = _table_sub(engine)
    assert [k.item_key for k, _ in sub.entries()] == ["a"]
    # A small update: applied row by row.
    feed(engine, poke(1, 2, [set_op("counters", "b", {"value": 2}), del_("counters", "a")]))
    assert calls[-1] == (["b"], {"added": ["b"], "modified": [], "removed": ["a"]})
    # A large update: the table is re-read in one pass; the diff is the same kind.
    big = [set_op("counters", f"k{i:04d}", {"value": i}) for i in range(500)]
    feed(engine, poke(2, 3, [*big, set_op("counters", "b", {"value": 3})]))
    keys, diff = calls[-1]
    assert keys == ["b", *[f"k{i:04d}" for i in range(500)]]
    assert diff["modified"] == ["b"]
    assert len(diff["added"]) == 500
    assert diff["removed"] == []
    # A reset replaces everything.
    feed(engine, poke(None, 4, [set_op("counters", "z", {"value": 0})], reset=True))
    keys, diff = calls[-1]
    assert keys == ["z"]
    assert diff["added"] == ["z"]
    assert len(diff["removed"]) == 501
    # Values handed out are the subscription's copies: mutating one leaves the store intact.
    sub.entries()[0][1]["value"] = 99

    async def read_z(ctx: Any) -> Any:
        return await ctx.table("counters").get("z")

    assert engine.query(read_z) == {"value": 0}
    engine.unsubscribe_table(sub)
    feed(engine, poke(4, 5, [set_op("counters", "y", {"value": 1})]))
    assert len(calls) == 3  # nothing after unsubscribing
