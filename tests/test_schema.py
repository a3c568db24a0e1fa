"""Schema declarations and backend configs: definition-time errors and value validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import (
    SchemaError,
    UnknownNameError,
    ValidationError,
    define_backend_config,
    define_migration,
    define_schema,
    item,
    singleton_table,
    table,
)
from synced_store.schema import ActionDef, MutatorDef, Searchable, TableDef


class Msg(BaseModel):
    id: str
    text: str
    status: str = "done"


class In(BaseModel):
    id: str
    n: int = 1


class Out(BaseModel):
    success: bool
    response: str | None = None


async def handler(ctx: Any, input: Any) -> None:
    return None


def sync_handler(ctx: Any, input: Any) -> None:
    return None


async def async_gen_handler(ctx: Any, input: Any) -> Any:
    yield None


def good_schema() -> Any:
    return define_schema(
        schema_version=1,
        tables={"messages": {"schema": table(Msg)}, "plain": table(Msg)},
        mutators={"send": {"description": "send one", "input": In}},
        actions={"callBot": {"description": "reply", "input": In, "output": Out}},
    )


# -- define_schema ------------------------------------------------------------------------------


def test_define_schema() -> None:
    s = good_schema()
    assert s.schema_version == 1
    assert set(s.tables) == {"messages", "plain"}
    assert s.table_def("messages").model is Msg
    assert not s.table_def("messages").is_singleton
    assert s.mutator("send").description == "send one"
    assert s.mutator("send").input is In
    assert s.action("callBot").output is Out
    assert s.action("callBot").description == "reply"


def test_schema_with_only_tables() -> None:
    s = define_schema(schema_version=0, tables={"t": table()})
    assert s.mutators == {}
    assert s.actions == {}


def test_unknown_names() -> None:
    s = good_schema()
    with pytest.raises(UnknownNameError, match="unknown table 'x'"):
        s.table_def("x")
    with pytest.raises(UnknownNameError, match="unknown mutator 'x'"):
        s.mutator("x")
    with pytest.raises(UnknownNameError, match="unknown action 'x'"):
        s.action("x")
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        s.mutator("x")
    with pytest.raises(UnknownNameError) as info:
        s.mutator("x")
    assert str(info.value) == "unknown mutator 'x'"  # not quoted like a KeyError


BAD_NAMES = ["", "has space", "slash/name", "é", "x" * 65, 5, None]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_table_names(name: Any) -> None:
    with pytest.raises(SchemaError, match="table name"):
        define_schema(schema_version=1, tables={name: table()})


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_mutator_names(name: Any) -> None:
    with pytest.raises(SchemaError, match="mutator name"):
        define_schema(schema_version=1, tables={}, mutators={name: {"input": In}})


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_action_names(name: Any) -> None:
    with pytest.raises(SchemaError, match="action name"):
        define_schema(schema_version=1, tables={}, actions={name: {"input": In}})


@pytest.mark.parametrize("name", ["a", "A-b_c.d", "x" * 64, "sendMessage", "0"])
def test_good_names(name: str) -> None:
    s = define_schema(
        schema_version=1,
        tables={name: table()},
        mutators={name: {"input": In}},
        actions={name: {"input": In}},
    )
    assert name in s.tables


@pytest.mark.parametrize("version", [-1, True, "1", 1.0, None])
def test_bad_schema_version(version: Any) -> None:
    with pytest.raises(SchemaError, match="schema_version"):
        define_schema(schema_version=version, tables={})


@pytest.mark.parametrize("spec", [Msg, {"schema": Msg}, {}, {"model": table(Msg)}, None, "table"])
def test_bad_table_specs(spec: Any) -> None:
    with pytest.raises(SchemaError, match="table 't': use table"):
        define_schema(schema_version=1, tables={"t": spec})


@pytest.mark.parametrize("spec", [In, None, "In", [In]])
def test_mutator_and_action_specs_must_be_dicts(spec: Any) -> None:
    with pytest.raises(SchemaError, match="mutator 'm' must be declared as a dict"):
        define_schema(schema_version=1, tables={}, mutators={"m": spec})
    with pytest.raises(SchemaError, match="action 'a' must be declared as a dict"):
        define_schema(schema_version=1, tables={}, actions={"a": spec})


# -- table / singleton_table / item ---------------------------------------------------------------


def test_item_and_singleton_table() -> None:
    t = singleton_table(item("theme", Msg), item("count", int))
    assert t.is_singleton
    assert t.items is not None
    assert set(t.items) == {"theme", "count"}
    assert t.items["count"].model is int
    assert t.validate_value("s", "count", "3") == 3  # lax, like every other value
    with pytest.raises(ValidationError, match="no item 'nope'"):
        t.validate_value("s", "nope", 1)


@pytest.mark.parametrize("key", ["", 5, None])
def test_item_needs_a_non_empty_string_key(key: Any) -> None:
    with pytest.raises(SchemaError, match="key must be a non-empty string"):
        item(key, int)


@pytest.mark.parametrize(
    "items",
    [(), (table(int),), ("theme",), (item("a", int), None)],
)
def test_singleton_table_needs_items(items: tuple[Any, ...]) -> None:
    with pytest.raises(SchemaError, match="one or more item"):
        singleton_table(*items)


def test_singleton_table_refuses_duplicate_keys() -> None:
    with pytest.raises(SchemaError, match="duplicate item keys"):
        singleton_table(item("a", int), item("a", str))


def test_table_validates_and_returns_a_fresh_json_copy() -> None:
    t = table(Msg)
    value = {"id": "1", "text": "hi"}
    out = t.validate_value("m", "1", value)
    assert out == {"id": "1", "text": "hi"}  # defaults that were not set are not added
    assert out is not value
    assert t.validate_value("m", "1", Msg(id="1", text="hi")) == {"id": "1", "text": "hi"}
    with pytest.raises(ValidationError, match="invalid value for m/1: text"):
        t.validate_value("m", "1", {"id": "1"})
    untyped = TableDef()
    assert untyped.validate_value("t", "k", [1, {"a": None}]) == [1, {"a": None}]
    with pytest.raises(ValidationError, match="invalid value for t/k"):
        untyped.validate_value("t", "k", {1, 2})


def test_values_that_validate_but_are_not_json_are_refused() -> None:
    class Loose(BaseModel):
        x: Any

    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        table(Loose).validate_value("t", "k", {"x": object()})


def test_validation_error_messages_are_short() -> None:
    class Many(BaseModel):
        a: int
        b: int
        c: int
        d: int
        e: int

    with pytest.raises(ValidationError, match=r"\(\+2 more\)") as info:
        table(Many).validate_value("t", "k", {})
    assert len(str(info.value)) < 200


# -- MutatorDef / ActionDef ----------------------------------------------------------------------


def test_mutator_def_parse_input() -> None:
    m = MutatorDef(name="send", input=In)
    parsed = m.parse_input({"id": "x"})
    assert isinstance(parsed, In)
    assert parsed == In(id="x", n=1)
    assert m.parse_input(In(id="y", n=2)) == In(id="y", n=2)
    assert m.parse_input({"id": "x", "n": "3"}).n == 3
    with pytest.raises(ValidationError, match="input for mutator 'send': id"):
        m.parse_input({"n": 1})
    with pytest.raises(ValidationError, match="input for mutator 'send'"):
        m.parse_input("not an object")


def test_mutator_def_input_to_json() -> None:
    m = MutatorDef(name="send", input=In)
    assert m.input_to_json({"id": "x"}) == {"id": "x"}
    assert m.input_to_json({"id": "x", "n": 2}) == {"id": "x", "n": 2}
    assert m.input_to_json(In(id="x")) == {"id": "x"}
    with pytest.raises(ValidationError, match="input for mutator 'send'"):
        m.input_to_json({"id": ["x"]})


@pytest.mark.parametrize("args", [{"id": "\ud800"}, {"id": "ok", "extra": "\udcff"}])
def test_input_to_json_rejects_strings_that_cannot_be_encoded(args: dict[str, Any]) -> None:
    m = MutatorDef(name="send", input=In if "extra" not in args else None)
    with pytest.raises(ValidationError):
        m.input_to_json(args)


def test_mutator_def_without_a_model_takes_any_json() -> None:
    m = MutatorDef(name="free", input=None)
    assert m.parse_input({"a": [1]}) == {"a": [1]}
    assert m.input_to_json([1, "x", None]) == [1, "x", None]
    with pytest.raises(ValidationError):
        m.input_to_json({"a": object()})


def test_action_def() -> None:
    a = ActionDef(name="callBot", input=In, output=Out)
    assert a.parse_input({"id": "x"}) == In(id="x")
    assert a.input_to_json({"id": "x"}) == {"id": "x"}
    assert a.output_to_json({"success": True}) == {"success": True}
    assert a.output_to_json(Out(success=False, response="r")) == {
        "success": False,
        "response": "r",
    }
    with pytest.raises(ValidationError, match="input for action 'callBot'"):
        a.parse_input({})


@pytest.mark.parametrize("output", [None, {}, {"success": "maybe"}, "ok", [True]])
def test_action_def_invalid_output(output: Any) -> None:
    a = ActionDef(name="callBot", input=In, output=Out)
    with pytest.raises(ValidationError, match="output of action 'callBot'"):
        a.output_to_json(output)


def test_action_without_output_model_returns_any_json() -> None:
    a = ActionDef(name="a", input=None)
    assert a.output_to_json({"x": 1}) == {"x": 1}
    assert a.output_to_json(None) is None
    with pytest.raises(ValidationError, match="output of action 'a'"):
        a.output_to_json(object())


# -- define_backend_config ------------------------------------------------------------------------


def test_define_backend_config() -> None:
    s = good_schema()
    services = {"bot.stream": sync_handler}
    b = define_backend_config(
        schema=s, mutators={"send": handler}, actions={"callBot": handler}, services=services
    )
    assert b.schema is s
    assert b.mutators == {"send": handler}
    assert b.actions == {"callBot": handler}
    assert b.services == services


def test_backend_config_without_actions() -> None:
    s = define_schema(schema_version=1, tables={}, mutators={"m": {"input": In}})
    b = define_backend_config(schema=s, mutators={"m": handler})
    assert b.actions == {}
    assert b.services == {}


@pytest.mark.parametrize(
    ("mutators", "actions", "match"),
    [
        ({}, {"callBot": handler}, r"no handler for declared mutator\(s\): send"),
        ({"send": handler}, {}, r"no handler for declared action\(s\): callBot"),
        ({"send": handler}, None, r"no handler for declared action\(s\): callBot"),
        (
            {"send": handler, "extra": handler},
            {"callBot": handler},
            r"mutator handler\(s\) not declared in the schema: extra",
        ),
        (
            {"send": handler},
            {"callBot": handler, "other": handler},
            r"action handler\(s\) not declared in the schema: other",
        ),
        ({"send": sync_handler}, {"callBot": handler}, "mutator 'send' must be an async function"),
        ({"send": handler}, {"callBot": sync_handler}, "action 'callBot' must be an async"),
        ({"send": lambda c, i: None}, {"callBot": handler}, "must be an async function"),
        ({"send": async_gen_handler}, {"callBot": handler}, "must be an async function"),
        ({"send": "handler"}, {"callBot": handler}, "must be an async function"),
    ],
)
def test_backend_config_errors(mutators: Any, actions: Any, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        define_backend_config(schema=good_schema(), mutators=mutators, actions=actions)


# -- migrations ------------------------------------------------------------------------------------


def migrated_schema(version: int = 3, **over: Any) -> Any:
    def rename(args: Any, emit: Any) -> None:
        emit("sendV2", {**args, "renamed": True})

    def expand(args: Any, emit: Any) -> None:
        emit("sendV3", {"part": 1, **args})
        emit("sendV3", {"part": 2, **args})

    migrations = over.pop(
        "migrations",
        {
            "1to2": define_migration(migrate_pending_mutation={"send": rename}),
            "2to3": define_migration(migrate_pending_mutation={"sendV2": expand}),
        },
    )
    return define_schema(
        schema_version=version, tables={}, mutators={}, migrations=migrations, **over
    )


def test_migrate_mutation_renames_transforms_and_expands() -> None:
    s = migrated_schema()
    assert s.migrate_mutation("send", {"id": "x"}, 1) == [
        ("sendV3", {"part": 1, "id": "x", "renamed": True}),
        ("sendV3", {"part": 2, "id": "x", "renamed": True}),
    ]
    assert s.migrate_mutation("sendV2", {"id": "x"}, 2) == [
        ("sendV3", {"part": 1, "id": "x"}),
        ("sendV3", {"part": 2, "id": "x"}),
    ]
    # Mutators without an entry pass through every step unchanged.
    assert s.migrate_mutation("other", {"a": 1}, 1) == [("other", {"a": 1})]
    # Already current: nothing to do.
    assert s.migrate_mutation("send", {"id": "x"}, 3) == [("send", {"id": "x"})]


def test_can_migrate_from() -> None:
    s = migrated_schema()
    assert s.can_migrate_from(1)
    assert s.can_migrate_from(2)
    assert s.can_migrate_from(3)
    assert not s.can_migrate_from(0)  # no 0to1 step
    assert not s.can_migrate_from(4)  # newer than this schema
    gap = migrated_schema(migrations={"2to3": define_migration()})
    assert gap.can_migrate_from(2)
    assert not gap.can_migrate_from(1)
    assert define_schema(schema_version=1, tables={}).migrations == {}


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("1to3", "must look like '1to2'"),
        ("2to1", "must look like '1to2'"),
        ("one2two", "must look like '1to2'"),
        ("1-2", "must look like '1to2'"),
        ("to2", "must look like '1to2'"),
        ("3to4", "goes beyond schema_version 3"),
    ],
)
def test_bad_migration_keys(key: str, match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        migrated_schema(migrations={key: define_migration()})


def test_migrations_must_come_from_define_migration() -> None:
    with pytest.raises(SchemaError, match="define_migration"):
        migrated_schema(migrations={"2to3": {"migrate_pending_mutation": {}}})


def test_define_migration() -> None:
    async def migrate_data(ctx: Any) -> None:
        return None

    m = define_migration(migrate_data=migrate_data)
    assert m.migrate_data is migrate_data
    assert m.migrate_pending_mutation == {}
    with pytest.raises(SchemaError, match="migrate_data must be an async function"):
        define_migration(migrate_data=lambda ctx: None)


class Post(BaseModel):
    text: str
    at: int


def test_searchable_tables() -> None:
    s = define_schema(
        1,
        {
            "posts": {
                "schema": table(Post),
                "searchable": {"textField": "text", "timestampField": "at"},
            },
            "plain": table(Post),
        },
    )
    assert s.tables["posts"].searchable == Searchable("text", "at")
    assert s.tables["plain"].searchable is None
    ok = define_schema(1, {"p": {"schema": table(Post), "searchable": {"text_field": "text"}}})
    assert ok.tables["p"].searchable == Searchable("text", None)
    with pytest.raises(SchemaError, match="not a field of Post"):
        define_schema(1, {"p": {"schema": table(Post), "searchable": {"text_field": "body"}}})
    with pytest.raises(SchemaError, match="needs a text_field"):
        define_schema(1, {"p": {"schema": table(Post), "searchable": {"timestamp_field": "at"}}})
    with pytest.raises(SchemaError, match="singleton"):
        define_schema(
            1,
            {"p": {"schema": singleton_table(item("a", Post)), "searchable": {"text_field": "x"}}},
        )


def test_backend_expose_list() -> None:
    s = define_schema(1, {"posts": table(Post)}, mutators={"m": {"input": Post}})

    async def m(ctx: object, input: object) -> None:
        return None

    assert define_backend_config(s, {"m": m}).expose == {}
    cfg = define_backend_config(s, {"m": m}, expose={"mutators": ["m", "m"], "tables": ["posts"]})
    assert cfg.expose == {"mutators": ("m",), "tables": ("posts",)}
    with pytest.raises(SchemaError, match="not declared"):
        define_backend_config(s, {"m": m}, expose={"actions": ["m"]})
