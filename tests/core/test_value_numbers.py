"""Numbers a value may hold: finite floats, integers within signed 64 bits. Refused where the
value is made (``set``, mutation args, action inputs), on the client as on the server: NaN and
Infinity are not JSON, and an integer past 64 bits cannot be written by every encoder on the
way (it used to be committed and then fail the server's fan-out, taking its instance down).
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, JsonValue

from synced_store import ValidationError, define_backend_config, define_schema, table
from synced_store.core.client_engine import ClientEngine
from synced_store.core.numbers import INT_MAX, INT_MIN, check_numbers


class Put(BaseModel):
    key: str
    value: JsonValue


class Add(BaseModel):
    key: str
    amount: int


schema = define_schema(
    schema_version=1,
    tables={"any": table(), "counters": table(int)},
    mutators={"put": {"input": Put}, "add": {"input": Add}},
)


async def put(ctx: Any, inp: Put) -> None:
    await ctx.table("any").set(inp.key, inp.value)


async def add(ctx: Any, inp: Add) -> None:
    now = await ctx.table("counters").get(inp.key) or 0
    await ctx.table("counters").set(inp.key, now + inp.amount)


backend = define_backend_config(schema, {"put": put, "add": add})
BAD = [float("nan"), float("inf"), -float("inf"), INT_MAX + 1, INT_MIN - 1, 10**30]
GOOD = [INT_MAX, INT_MIN, 1.5e308, -0.0, 2**53 + 1, "NaN", "9" * 40, {"Infinity": [1]}]


@pytest.mark.parametrize("bad", BAD)
def test_values_with_a_number_no_json_side_can_carry_are_refused(bad: Any) -> None:
    for value in (bad, [bad], {"a": {"b": [1, bad]}}):
        with pytest.raises(ValidationError):
            check_numbers(value)
        with pytest.raises(ValidationError, match=r"JSON number|64 bits"):
            schema.tables["any"].validate_encoded("any", "k", value)


@pytest.mark.parametrize("good", GOOD)
def test_every_json_number_and_string_that_looks_like_one_is_fine(good: Any) -> None:
    check_numbers(good)
    out, _ = schema.tables["any"].validate_encoded("any", "k", {"v": good})
    assert out == {"v": good}


def test_the_client_refuses_such_args_and_results_before_queueing_anything() -> None:
    engine = ClientEngine(backend, user_id="u", client_id="c")
    with pytest.raises(ValidationError):
        engine.mutate("put", {"key": "k", "value": 10**30})
    engine.mutate("add", {"key": "n", "amount": INT_MAX})
    with pytest.raises(ValidationError, match="64 bits"):
        engine.mutate("add", {"key": "n", "amount": 1})  # the stored sum would overflow
    assert [m.name for m in engine.pending] == ["add"]
