"""Tool definitions from a schema: what an app exposes to AI agents, in OpenAI and MCP form.

``define_tools(backend, expose=...)`` builds a :class:`ToolSet`: one tool per exposed mutator
(its description and the JSON Schema of its input model) and action (also its output schema),
plus the read tools ``get`` and ``scan`` over the exposed tables and ``search`` over those that
are searchable. Nothing is exposed that the app did not list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import SchemaError
from ..schema import BackendConfig, Schema, check_expose
from .reads import READ_TOOLS, read_tool_schema
from .schemas import WRAP_INPUT, WRAP_OUTPUT, model_schema, object_schema

__all__ = ["ToolDef", "ToolKind", "ToolSet", "define_tools"]

ToolKind = Literal["mutator", "action", "read"]

#: Names every tool API accepts (OpenAI's function names are the strictest: no dots).
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_READ_DESCRIPTIONS = {
    "get": "Read one row of a table by its item key.",
    "scan": "List rows of a table in order (optionally those whose key has a prefix); "
    "returns `next` to continue.",
    "search": "Find rows of a searchable table whose text contains the query.",
}


@dataclass(frozen=True)
class ToolDef:
    """One tool: its name, description and schemas, and what it runs."""

    name: str
    description: str
    #: JSON Schema (draft 2020-12) of the arguments: always an object.
    input_schema: dict[str, Any]
    kind: ToolKind
    #: The mutator or action it runs, or the read operation (``get`` / ``scan`` / ``search``).
    target: str
    #: JSON Schema of the structured result (actions, read tools), an object.
    output_schema: dict[str, Any] | None = None
    #: The input model is not an object: the value travels as ``{"input": value}``.
    wrapped_input: bool = False
    #: The output is not an object: it is returned as ``{"result": value}``.
    wrapped_output: bool = False
    #: Input fields the caller fills in (removed from ``input_schema``; see ``ToolSet.call``).
    hidden: tuple[str, ...] = ()
    #: The tables a read tool may read.
    tables: tuple[str, ...] = ()

    def openai(self) -> dict[str, Any]:
        """The OpenAI chat-completions ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_schema,
            },
        }

    def mcp(self) -> dict[str, Any]:
        """The MCP tool descriptor (``tools/list`` entry, camelCase as on the wire)."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }
        if self.output_schema is not None:
            out["outputSchema"] = self.output_schema
        if self.kind == "read":
            out["annotations"] = {"readOnlyHint": True, "openWorldHint": False}
        else:
            out["annotations"] = {"readOnlyHint": False, "openWorldHint": False}
        return out


def _hide(schema: dict[str, Any], hidden: Sequence[str], name: str) -> dict[str, Any]:
    if not hidden:
        return schema
    props = schema.get("properties")
    if not isinstance(props, dict) or not set(hidden) <= set(props):
        raise SchemaError(f"tool {name!r}: hidden fields {list(hidden)} are not all input fields")
    out = dict(schema)
    out["properties"] = {k: v for k, v in props.items() if k not in hidden}
    if "required" in out:
        out["required"] = [r for r in out["required"] if r not in hidden]
    return out


@dataclass(frozen=True)
class ToolSet:
    """The tools of one app. Build with :func:`define_tools`."""

    schema: Schema
    tools: Mapping[str, ToolDef] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Tool names, in definition order."""
        return list(self.tools)

    @property
    def tables(self) -> tuple[str, ...]:
        """The exposed tables (readable with ``get`` and ``scan``; MCP resources)."""
        tool = self.tools.get("scan")
        return tool.tables if tool is not None else ()

    def get(self, name: str) -> ToolDef | None:
        """The tool called ``name``, or None."""
        return self.tools.get(name)

    def openai(self) -> list[dict[str, Any]]:
        """Every tool in OpenAI chat-completions ``tools`` format."""
        return [t.openai() for t in self.tools.values()]

    def mcp(self) -> list[dict[str, Any]]:
        """Every tool as an MCP tool descriptor."""
        return [t.mcp() for t in self.tools.values()]

    def __len__(self) -> int:
        return len(self.tools)

    async def call(
        self,
        target: Any,
        name: str,
        arguments: Any,
        *,
        hidden_values: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run tool ``name`` against ``target`` (a :class:`~synced_store.tools.ToolTarget`).

        Returns a :class:`~synced_store.tools.ToolResult`; never raises for bad arguments or a
        refused mutation (the result says so). ``hidden_values`` fill the tool's hidden fields.
        """
        from .calls import call_tool

        return await call_tool(self, target, name, arguments, hidden_values or {})


def define_tools(
    app: BackendConfig | Schema,
    expose: Mapping[str, Sequence[str]] | None = None,
    *,
    hidden: Mapping[str, Sequence[str]] | None = None,
) -> ToolSet:
    """The tools an app exposes.

    Args:
        app: the backend (its ``expose`` is used when ``expose`` is not given) or a schema.
        expose: ``{"mutators": [...], "actions": [...], "tables": [...]}``. Unlisted names are
            not exposed; an empty or missing mapping exposes nothing.
        hidden: ``{tool: [field, ...]}``: input fields left out of the tool's schema and filled
            by the caller (``ToolSet.call(..., hidden_values=...)``), such as an id the server
            derives so that a retried call does not create a second row.

    Raises :class:`~synced_store.errors.SchemaError` for unknown names, a tool name that is not
    1-64 characters of ``[A-Za-z0-9_-]``, or a mutator or action named like a read tool.
    """
    schema = app.schema if isinstance(app, BackendConfig) else app
    if expose is None:
        expose = app.expose if isinstance(app, BackendConfig) else {}
    chosen = check_expose(schema, expose)
    hidden = dict(hidden or {})
    tools: dict[str, ToolDef] = {}

    def add(tool: ToolDef) -> None:
        if not _TOOL_NAME.match(tool.name):
            raise SchemaError(
                f"{tool.kind} {tool.name!r} cannot be a tool: tool names are 1-64 characters of "
                "[A-Za-z0-9_-]"
            )
        if tool.name in tools:
            raise SchemaError(f"two tools are named {tool.name!r}")
        tools[tool.name] = tool

    for name in chosen.get("mutators", ()):
        mdef = schema.mutators[name]
        raw, wrapped = object_schema(model_schema(mdef.input), WRAP_INPUT)
        hide = tuple(hidden.pop(name, ()))
        add(
            ToolDef(
                name=name,
                description=mdef.description or f"Run the mutator {name}.",
                input_schema=_hide(raw, hide, name),
                kind="mutator",
                target=name,
                wrapped_input=wrapped,
                hidden=hide,
            )
        )
    for name in chosen.get("actions", ()):
        adef = schema.actions[name]
        raw, wrapped = object_schema(model_schema(adef.input), WRAP_INPUT)
        out, out_wrapped = object_schema(model_schema(adef.output), WRAP_OUTPUT)
        hide = tuple(hidden.pop(name, ()))
        add(
            ToolDef(
                name=name,
                description=adef.description or f"Run the action {name}.",
                input_schema=_hide(raw, hide, name),
                kind="action",
                target=name,
                output_schema=out,
                wrapped_input=wrapped,
                wrapped_output=out_wrapped,
                hidden=hide,
            )
        )
    tables = chosen.get("tables", ())
    searchable = tuple(t for t in tables if schema.tables[t].searchable is not None)
    for op in READ_TOOLS:
        over = searchable if op == "search" else tables
        if not over:
            continue
        add(
            ToolDef(
                name=op,
                description=_READ_DESCRIPTIONS[op],
                input_schema=read_tool_schema(op, over),
                kind="read",
                target=op,
                output_schema={"type": "object"},
                tables=over,
            )
        )
    if hidden:
        raise SchemaError(f"hidden fields given for tools that are not exposed: {sorted(hidden)}")
    return ToolSet(schema=schema, tools=tools)
