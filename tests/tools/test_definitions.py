"""Tool definitions from a schema: what is exposed, the JSON Schemas (checked with the
``jsonschema`` package against draft 2020-12), and the OpenAI and MCP shapes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jsonschema
import mcp_types
import pytest
from pydantic import BaseModel

from synced_store import SchemaError, define_backend_config, define_schema, table
from synced_store.tools import define_tools

from .notes_app import EXPOSE, backend, schema

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.todo.app import backend as todo_backend  # noqa: E402

V = jsonschema.Draft202012Validator


def check(schema: dict[str, Any], value: Any) -> bool:
    V.check_schema(schema)
    return V(schema).is_valid(value)


def test_only_what_the_app_lists_is_exposed() -> None:
    assert len(define_tools(schema)) == 0  # a bare schema exposes nothing
    assert len(define_tools(define_backend_config(schema, backend.mutators, backend.actions))) == 0
    tools = define_tools(backend)
    assert tools.names == [
        "addNote",
        "deleteNote",
        "shout",
        "saveDraft",
        "wordCount",
        "get",
        "scan",
        "search",
    ]
    only = define_tools(backend, {"mutators": ["addNote"]})
    assert only.names == ["addNote"]  # no tables listed: no read tools
    assert only.tables == ()
    assert define_tools(backend, {"tables": ["drafts"]}).names == ["get", "scan"]  # not searchable


def test_the_read_tools_name_only_exposed_tables() -> None:
    tools = define_tools(backend)
    for name in ("get", "scan"):
        tool = tools.get(name)
        assert tool is not None
        assert tool.input_schema["properties"]["table"]["enum"] == EXPOSE["tables"]
    search = tools.get("search")
    assert search is not None
    assert search.input_schema["properties"]["table"]["enum"] == ["notes"]
    assert "secrets" not in tools.tables


@pytest.mark.parametrize(
    ("expose", "match"),
    [
        ({"mutators": ["nope"]}, "not declared"),
        ({"tables": ["nope"]}, "not declared"),
        ({"queries": ["addNote"]}, "unknown key"),
        ({"mutators": "addNote"}, "list of names"),
    ],
)
def test_bad_expose_lists_are_refused(expose: dict[str, Any], match: str) -> None:
    with pytest.raises(SchemaError, match=match):
        define_tools(backend, expose)
    with pytest.raises(SchemaError, match=match):
        define_backend_config(schema, backend.mutators, backend.actions, expose=expose)


class In(BaseModel):
    x: int


async def _noop(ctx: Any, input: Any) -> None:
    return None


@pytest.mark.parametrize(("name", "match"), [("get", "two tools"), ("a.b", "cannot be a tool")])
def test_tool_names_must_be_valid_and_unique(name: str, match: str) -> None:
    s = define_schema(1, {"t": table()}, mutators={name: {"input": In}})
    with pytest.raises(SchemaError, match=match):
        define_tools(s, {"mutators": [name], "tables": ["t"]})


def test_input_schemas_are_draft_2020_12_and_agree_with_the_models() -> None:
    tools = define_tools(backend)
    for tool in tools.tools.values():
        V.check_schema(tool.input_schema)
        assert tool.input_schema["type"] == "object"
        if tool.output_schema is not None:
            V.check_schema(tool.output_schema)
    add = tools.get("addNote")
    assert add is not None
    assert check(add.input_schema, {"id": "n1", "text": "hi"})
    assert not check(add.input_schema, {"id": "n1", "text": ""})  # min_length, as pydantic
    assert not check(add.input_schema, {"text": "no id"})
    assert not check(add.input_schema, {"id": "n1", "text": "x", "createdAt": "soon"})
    scan = tools.get("scan")
    assert scan is not None
    assert check(scan.input_schema, {"table": "notes", "limit": 5, "prefix": "n"})
    assert not check(scan.input_schema, {"table": "secrets"})
    assert not check(scan.input_schema, {"table": "notes", "limit": 0})
    assert not check(scan.input_schema, {"table": "notes", "extra": 1})


def test_every_todo_tool_is_a_valid_schema() -> None:
    tools = define_tools(todo_backend)
    assert tools.names == ["addTodo", "setDone", "deleteTodo", "get", "scan"]
    for tool in tools.tools.values():
        V.check_schema(tool.input_schema)
    add = tools.get("addTodo")
    assert add is not None
    assert add.description == "Add a todo (or update its text if it exists)."
    assert check(add.input_schema, {"id": "t1", "text": "milk"})
    assert not check(add.input_schema, {"id": "", "text": "milk"})


def test_non_object_inputs_and_outputs_are_wrapped() -> None:
    tools = define_tools(backend)
    shout = tools.get("shout")
    assert shout is not None
    assert shout.wrapped_input
    assert shout.input_schema["required"] == ["input"]
    assert check(shout.input_schema, {"input": "hello"})
    assert not check(shout.input_schema, {"input": 3})
    count = tools.get("wordCount")
    assert count is not None
    assert count.wrapped_output
    assert not count.wrapped_input
    assert count.output_schema == {
        "type": "object",
        "properties": {"result": {"type": "integer"}},
        "required": ["result"],
        "additionalProperties": False,
    }


def test_hidden_fields_leave_the_schema() -> None:
    tools = define_tools(backend, {"mutators": ["addNote"]}, hidden={"addNote": ["id"]})
    add = tools.get("addNote")
    assert add is not None
    assert add.hidden == ("id",)
    assert "id" not in add.input_schema["properties"]
    assert add.input_schema["required"] == ["text"]
    with pytest.raises(SchemaError, match="not all input fields"):
        define_tools(backend, {"mutators": ["addNote"]}, hidden={"addNote": ["nope"]})
    with pytest.raises(SchemaError, match="not exposed"):
        define_tools(backend, {"mutators": ["addNote"]}, hidden={"deleteNote": ["id"]})


def test_openai_and_mcp_shapes() -> None:
    tools = define_tools(backend)
    openai = tools.openai()
    assert openai[0] == {
        "type": "function",
        "function": {
            "name": "addNote",
            "description": "Add a note (a no-op if the id exists).",
            "parameters": tools.tools["addNote"].input_schema,
        },
    }
    for d in tools.mcp():
        tool = mcp_types.Tool.model_validate(d)  # the SDK's own model accepts it
        assert tool.input_schema["type"] == "object"
    by_name = {d["name"]: d for d in tools.mcp()}
    assert by_name["get"]["annotations"]["readOnlyHint"] is True
    assert by_name["addNote"]["annotations"]["readOnlyHint"] is False
    assert "outputSchema" not in by_name["addNote"]
    assert by_name["wordCount"]["outputSchema"]["properties"]["result"] == {"type": "integer"}
