"""JSON Schemas (draft 2020-12) of mutator and action models, shaped for tool definitions.

A tool's input must be a JSON object (OpenAI function ``parameters``, MCP ``inputSchema``): an
input model that is not an object (``str``, a list, ``None`` meaning any JSON) is wrapped as
``{"input": <value>}``. The same goes for an action's output as MCP structured content, which
must be an object on protocol versions before 2026-07-28: it is wrapped as ``{"result": ...}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

__all__ = ["WRAP_INPUT", "WRAP_OUTPUT", "model_schema", "object_schema"]

#: The property a non-object input travels in.
WRAP_INPUT = "input"
#: The property a non-object output travels in.
WRAP_OUTPUT = "result"


def model_schema(model: Any) -> dict[str, Any]:
    """The JSON Schema of values of ``model`` (a pydantic model, any type pydantic knows, or
    None for any JSON value), as pydantic writes it: draft 2020-12, ``$defs`` for nested
    models."""
    if model is None:
        return {}
    schema: dict[str, Any] = TypeAdapter(model).json_schema(mode="validation")
    return schema


def _is_object(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "object":
        return True
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema.get("$defs", {}).get(ref[len("#/$defs/") :], {})
        return isinstance(target, dict) and target.get("type") == "object"
    return False


def object_schema(schema: dict[str, Any], wrap_as: str) -> tuple[dict[str, Any], bool]:
    """``(schema, wrapped)``: ``schema`` itself when it describes a JSON object, else an object
    schema with the value in property ``wrap_as`` (its ``$defs`` moved to the root)."""
    if _is_object(schema):
        return schema, False
    inner = dict(schema)
    defs = inner.pop("$defs", None)
    out: dict[str, Any] = {
        "type": "object",
        "properties": {wrap_as: inner},
        "required": [wrap_as],
        "additionalProperties": False,
    }
    if defs:
        out["$defs"] = defs
    return out, True
