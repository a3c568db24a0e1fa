"""The nesting-depth limit of JSON values (``MAX_VALUE_DEPTH``): ``check_depth``, every ``set``
(client and server contexts), mutation args before they are queued, action inputs.

A value the server would refuse must be refused by the client's own call, with the same error
(``ValueTooDeepError``, kind ``value_too_deep``), so a client never pushes what the server
refuses (a frame nested ~200 deep is refused by the server's parser as a whole: close 4003).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pydantic_core
import pytest
from pydantic import BaseModel, JsonValue

from synced_store import ValidationError, define_backend_config, define_schema, table
from synced_store.core.client_engine import ClientEngine
from synced_store.core.context import MutationContext, json_input
from synced_store.core.keys import MAX_VALUE_DEPTH, check_depth
from synced_store.errors import SyncedStoreError, ValueTooDeepError

from .app import MemoryTx, feed, poke, pub, sent

LIMIT = MAX_VALUE_DEPTH


def nest(depth: int, leaf: Any = 1) -> Any:
    """``depth`` objects inside one another around ``leaf`` (``nest(0) == 1``)."""
    v = leaf
    for i in range(depth):
        v = {"a": v} if i % 2 else [v]
    return v


class Doc(BaseModel):
    title: str
    body: JsonValue = None


class Put(BaseModel):
    key: str
    value: JsonValue


class Nest(BaseModel):
    key: str
    depth: int


schema = define_schema(
    schema_version=1,
    tables={"any": table(), "docs": table(Doc), "strict": table(int)},
    mutators={"put": {"input": Put}, "nest": {"input": Nest}},
    actions={"echo": {"input": Put, "output": None}},
)


async def put(ctx: Any, inp: Put) -> None:
    await ctx.table("any").set(inp.key, inp.value)


async def nest_mutator(ctx: Any, inp: Nest) -> None:
    await ctx.table("any").set(inp.key, nest(inp.depth))


async def echo(ctx: Any, inp: Put) -> Any:
    return inp.value


backend = define_backend_config(
    schema=schema, mutators={"put": put, "nest": nest_mutator}, actions={"echo": echo}
)


def engine() -> ClientEngine:
    e = ClientEngine(backend, user_id="alice", client_id="c1")
    feed(e, {"type": "connected", "last_mutation_id": 0})
    feed(e, poke(None, 1, [], 0))
    sent(e)
    e.events_received()
    return e


# -- check_depth ------------------------------------------------------------------------------


def test_the_limit() -> None:
    assert MAX_VALUE_DEPTH == 32
    assert issubclass(ValueTooDeepError, ValidationError)
    assert ValueTooDeepError.kind == "value_too_deep"


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (None, 0),
        (1, 0),
        ("s" * 1000, 0),
        (True, 0),
        (1.5, 0),
        ({}, 1),
        ([], 1),
        ((), 1),
        ({"a": 1, "b": "x", "c": None}, 1),
        ([1, "x", None, 2.5], 1),
        ([[]], 2),
        ({"a": [1]}, 2),
        ([1, [2, [3]], {"x": {}}], 3),
        ({"flat": 1, "deep": {"a": {"b": {"c": 1}}}, "z": [1]}, 4),
        (OrderedDict(a=OrderedDict(b=1)), 2),  # a Mapping that is not a dict
        ((1, (2,)), 2),
        ({"model": Doc(title="t", body={"x": [1]})}, 1),  # other objects are leaves
    ],
)
def test_check_depth_counts_nested_arrays_and_objects(value: Any, depth: int) -> None:
    check_depth(value, limit=depth)
    if depth > 0:
        with pytest.raises(ValueTooDeepError):
            check_depth(value, limit=depth - 1)


def test_check_depth_at_and_beyond_the_limit() -> None:
    check_depth(nest(LIMIT))
    check_depth({"wide": [nest(LIMIT - 2) for _ in range(100)]})
    for depth in (LIMIT + 1, 199, 100_000):  # no recursion: any depth is refused quickly
        with pytest.raises(ValueTooDeepError, match=f"more than {LIMIT} levels"):
            check_depth(nest(depth))
    # Only the deepest branch counts, wherever it is.
    with pytest.raises(ValueTooDeepError):
        check_depth({"a": 1, "b": [nest(3), {"c": nest(LIMIT)}], "d": 2})


def test_check_depth_message_names_what_was_checked() -> None:
    with pytest.raises(
        ValueTooDeepError, match=r"^value for t/k nests more than 2 levels of arrays/objects$"
    ):
        check_depth([[[1]]], limit=2, what="value for t/k")


def test_check_depth_terminates_on_cycles_and_shared_subtrees() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueTooDeepError):
        check_depth(cyclic)
    shared: Any = [1]
    for _ in range(80):  # 2**80 paths, 80 levels: depth first finds the 33rd level at once
        shared = [shared, shared]
    with pytest.raises(ValueTooDeepError):
        check_depth(shared)


# -- TableHandle.set, on clients and on the server -------------------------------------------


@pytest.fixture(params=[False, True], ids=["client", "server"])
def ctx(request: pytest.FixtureRequest) -> MutationContext:
    return MutationContext(schema, MemoryTx(), "alice", is_server=request.param)


async def test_set_accepts_a_value_at_the_limit(ctx: MutationContext) -> None:
    await ctx.table("any").set("k", nest(LIMIT))
    assert await ctx.table("any").get("k") == nest(LIMIT)
    await ctx.table("docs").set("d", {"title": "t", "body": nest(LIMIT - 1)})
    assert (await ctx.table("docs").get("d")) == {"title": "t", "body": nest(LIMIT - 1)}


@pytest.mark.parametrize("depth", [LIMIT + 1, 199, 300, 5000])
async def test_set_refuses_a_value_one_level_deeper_or_more(
    ctx: MutationContext, depth: int
) -> None:
    # 199: what the server's JSON parser took whole frames down for; 300: beyond pydantic-core's
    # recursion guard (255 natively, 49 in Pyodide), where validation fails before the depth
    # check could run on its output: the given value's depth still decides the error.
    with pytest.raises(ValueTooDeepError, match=rf"^value for any/k nests more than {LIMIT}"):
        await ctx.table("any").set("k", nest(depth))
    with pytest.raises(ValueTooDeepError, match=r"^value for docs/d nests"):
        await ctx.table("docs").set("d", {"title": "t", "body": nest(depth - 1)})
    assert not await ctx.table("any").has("k")
    assert not await ctx.table("docs").has("d")


async def test_a_too_deep_value_that_also_fails_its_model_is_too_deep(
    ctx: MutationContext,
) -> None:
    # The server reports the same kind whatever else is wrong with the value.
    with pytest.raises(ValueTooDeepError):
        await ctx.table("strict").set("k", nest(LIMIT + 1))
    with pytest.raises(ValueTooDeepError):
        await ctx.table("docs").set("d", {"title": 5, "body": nest(LIMIT)})
    with pytest.raises(ValidationError) as exc:
        await ctx.table("strict").set("k", nest(2))
    assert type(exc.value) is ValidationError


async def test_the_depth_of_the_validated_value_counts(ctx: MutationContext) -> None:
    # The stored (validated) form is what syncs: a model instance is checked once dumped.
    with pytest.raises(ValueTooDeepError):
        await ctx.table("docs").set("d", Doc(title="t", body=nest(LIMIT)))
    await ctx.table("docs").set("d", Doc(title="t", body=nest(LIMIT - 1)))
    # Unknown fields are dropped by the model: they are not stored, so they do not count.
    await ctx.table("docs").set("e", {"title": "t", "ignored": nest(LIMIT + 5)})
    assert await ctx.table("docs").get("e") == {"title": "t"}


def test_the_error_is_reported_to_clients_with_its_kind() -> None:
    err = ValueTooDeepError("value for any/k nests more than 32 levels of arrays/objects")
    assert isinstance(err, SyncedStoreError)
    assert getattr(err, "kind", None) == "value_too_deep"


# -- ClientEngine.mutate: args are checked before anything is queued --------------------------


def test_mutate_accepts_args_at_the_limit() -> None:
    e = engine()
    m = e.mutate("put", {"key": "k", "value": nest(LIMIT - 1)})  # args: one level more
    assert e.pending == [m]
    [push] = sent(e)
    assert push["mutations"][0]["args"] == {"key": "k", "value": nest(LIMIT - 1)}


@pytest.mark.parametrize("depth", [LIMIT, 198, 1000])
def test_mutate_with_too_deep_args_raises_and_queues_nothing(depth: int) -> None:
    e = engine()
    args = {"key": "k", "value": nest(depth)}  # args nest depth + 1 levels
    with pytest.raises(
        ValueTooDeepError, match=rf"^input for mutator 'put' nests more than {LIMIT} levels"
    ):
        e.mutate("put", args)
    assert e.pending == []
    assert e.next_mutation_id == 1
    assert sent(e) == []
    assert e.store.get(pub("any", "k")) is None
    assert e.events_received() == []


def test_a_mutator_writing_a_too_deep_value_raises_and_queues_nothing() -> None:
    e = engine()
    e.mutate("nest", {"key": "ok", "depth": LIMIT})
    assert e.store.get(pub("any", "ok")) == ("", nest(LIMIT))
    sent(e)
    for depth in (LIMIT + 1, 199):  # 199: the value of the bug report
        with pytest.raises(ValueTooDeepError, match=r"^value for any/deep nests"):
            e.mutate("nest", {"key": "deep", "depth": depth})
    assert [m.name for m in e.pending] == ["nest"]
    assert sent(e) == []
    assert e.store.get(pub("any", "deep")) is None


def test_a_rejected_value_too_deep_mutation_from_the_server_is_dropped() -> None:
    e = engine()
    e.mutate("put", {"key": "k", "value": 1})
    err = {"id": 1, "name": "put", "kind": "value_too_deep", "message": "too deep"}
    feed(e, poke(1, 2, [], 1, errors=[err]))
    assert e.pending == []
    assert e.store.get(pub("any", "k")) is None


# -- action inputs ---------------------------------------------------------------------------


def test_enqueue_action_refuses_too_deep_input(ctx: MutationContext) -> None:
    ctx.enqueue_action("echo", {"key": "k", "value": nest(LIMIT - 1)})
    with pytest.raises(ValueTooDeepError, match=r"^input for action 'echo' nests"):
        ctx.enqueue_action("echo", {"key": "k", "value": nest(LIMIT)})
    with pytest.raises(ValueTooDeepError):
        ctx.enqueue_action("echo", {"key": "k", "value": nest(400)})
    assert len(ctx.enqueued) == (1 if ctx.is_server else 0)


def _encoded(v: Any) -> tuple[Any, bytes]:
    return v, pydantic_core.to_json(v)


def test_json_input_checks_what_the_encoder_returns() -> None:
    assert json_input(_encoded, nest(LIMIT), "x") == nest(LIMIT)
    with pytest.raises(ValueTooDeepError, match=r"^x nests"):
        json_input(lambda v: _encoded([v]), nest(LIMIT), "x")

    def refuses(v: Any) -> Any:
        raise ValidationError("invalid x")

    with pytest.raises(ValidationError, match="invalid x"):
        json_input(refuses, nest(LIMIT), "x")
    with pytest.raises(ValueTooDeepError):
        json_input(refuses, nest(LIMIT + 1), "x")
