"""AI-native stores: an app's mutators, actions and tables as tools for LLMs and agents.

- :func:`define_tools` builds a :class:`ToolSet` from a backend's ``expose`` list (nothing is
  exposed by default): one tool per mutator and action, with its description and the JSON Schema
  (draft 2020-12) of its input, and the read tools ``get``, ``scan`` and ``search``. It gives
  them in OpenAI chat-completions format (:meth:`ToolSet.openai`) and as MCP tool descriptors
  (:meth:`ToolSet.mcp`).
- :meth:`ToolSet.call` runs a call on a target — a client (:class:`ClientTarget`), an action's
  context (:class:`ActionTarget`), or the server (the MCP endpoint) — and returns a
  :class:`ToolResult`. A mutator tool is an ordinary mutation: it syncs to every client.
- The MCP server (``synced-store mcp``, ``create_app(..., mcp=True)``) is in
  :mod:`synced_store.tools.mcp_server` and needs the ``mcp`` extra.
"""

from .calls import ActionTarget, ToolResult, ToolTarget, parse_arguments
from .definitions import ToolDef, ToolKind, ToolSet, define_tools
from .targets import ClientTarget

__all__ = [
    "ActionTarget",
    "ClientTarget",
    "ToolDef",
    "ToolKind",
    "ToolResult",
    "ToolSet",
    "ToolTarget",
    "define_tools",
    "parse_arguments",
]
