"""Running a tool call: parse the arguments, run the mutator, action or read on a target, and
turn the outcome (or the refusal) into a :class:`ToolResult`.

A target is where the call runs: a synced-store client (:class:`ClientTarget`, the stdio MCP
server), the server's instance as the authenticated user (the Streamable HTTP endpoint), or an
action's context (:class:`ActionTarget`, a bot's tool calls). Whatever the target, a mutator
tool is one ordinary mutation: validated, run by the server's single writer as the caller,
synced to every client. Invalid input and refused mutations change nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..core.context import ReadContext
from ..errors import (
    MutationFailedError,
    PermissionDeniedError,
    SyncedStoreError,
    ValidationError,
)
from .reads import run_read
from .schemas import WRAP_INPUT, WRAP_OUTPUT

if TYPE_CHECKING:
    from .definitions import ToolSet

__all__ = ["ActionTarget", "ToolResult", "ToolTarget", "call_tool", "parse_arguments"]

log = logging.getLogger("synced_store.tools")

ReadFn = Callable[[ReadContext], Awaitable[Any]]


@dataclass(frozen=True)
class ToolResult:
    """The outcome of a tool call: ``output`` (a JSON object) when ``ok``, else ``error`` (a
    message for the model) and its ``kind`` (``invalid_input``, ``permission_denied``, ...)."""

    ok: bool
    output: Any = None
    error: str | None = None
    kind: str | None = None

    def text(self) -> str:
        """The result as text for a model: the output's JSON, or ``Error (kind): message``."""
        if self.ok:
            return json.dumps(self.output, ensure_ascii=False, separators=(",", ":"))
        return f"Error ({self.kind}): {self.error}"


class ToolTarget(Protocol):
    """Where tool calls run, as one user."""

    @property
    def user_id(self) -> str:
        """The user the calls run as."""
        ...

    async def mutate(self, name: str, args: Any) -> None:
        """Run mutator ``name``; return once committed, raise if refused."""
        ...

    async def run_action(self, name: str, args: Any) -> Any:
        """Run action ``name``; return its output (JSON), raise if it fails."""
        ...

    async def read(self, fn: ReadFn) -> Any:
        """Run ``await fn(ctx)`` with a read context of the rows the user may see."""
        ...


class ActionTarget:
    """Tool calls made from inside an action (a bot's tool calls): mutators through
    ``ctx.mutate`` (committed as the action's user, synced to every client), reads through the
    action's read-only tables. Actions cannot be called from here."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    @property
    def user_id(self) -> str:
        """The action's user."""
        return str(self.ctx.user_id)

    async def mutate(self, name: str, args: Any) -> None:
        """``await ctx.mutate(name, args)``."""
        await self.ctx.mutate(name, args)

    async def run_action(self, name: str, args: Any) -> Any:
        """Refused: an action does not start other actions as tool calls."""
        raise PermissionDeniedError(f"action {name!r} cannot be called from inside an action")

    async def read(self, fn: ReadFn) -> Any:
        """Run ``fn`` on the action's context."""
        return await fn(self.ctx)


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as a dict: a dict as is, a JSON object text (what models send),
    None or ``""`` as ``{}``. Raises :class:`ValidationError` otherwise."""
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as exc:
            raise ValidationError(f"tool arguments are not valid JSON: {exc}") from None
    if not isinstance(arguments, Mapping):
        raise ValidationError("tool arguments must be a JSON object")
    return dict(arguments)


def _error(exc: BaseException) -> ToolResult:
    if isinstance(exc, MutationFailedError):
        return ToolResult(False, error=exc.message, kind=exc.error_kind)
    if isinstance(exc, SyncedStoreError):
        return ToolResult(False, error=str(exc), kind=exc.kind)
    if isinstance(exc, TimeoutError):
        return ToolResult(False, error=str(exc) or "timed out", kind="timeout")
    # A mutator or action raised something of its own: a permanent error, reported as such.
    return ToolResult(False, error=f"{type(exc).__name__}: {exc}", kind="mutator_error")


async def call_tool(
    tools: ToolSet,
    target: ToolTarget,
    name: str,
    arguments: Any,
    hidden_values: Mapping[str, Any],
) -> ToolResult:
    """Run one tool call (see :meth:`ToolSet.call`)."""
    tool = tools.get(name)
    if tool is None:
        return ToolResult(False, error=f"unknown tool {name!r}", kind="unknown_name")
    try:
        args = parse_arguments(arguments)
        if tool.hidden:  # the caller's values, never the model's
            args = {k: v for k, v in args.items() if k not in tool.hidden}
            args.update({k: v for k, v in hidden_values.items() if k in tool.hidden})
        value: Any = args
        if tool.wrapped_input:
            if set(args) != {WRAP_INPUT}:
                raise ValidationError(f"tool {name!r} takes one argument, {WRAP_INPUT!r}")
            value = args[WRAP_INPUT]
        if tool.kind == "mutator":
            await target.mutate(tool.target, value)
            output: Any = {"committed": True, "mutator": tool.target}
        elif tool.kind == "action":
            out = await target.run_action(tool.target, value)
            output = {WRAP_OUTPUT: out} if tool.wrapped_output else out
        else:
            schema = tools.schema

            async def read(ctx: ReadContext) -> Any:
                return await run_read(tool.target, args, ctx, tool.tables, schema)

            output = await target.read(read)
    except Exception as exc:
        result = _error(exc)
        log.info("tool %s for %s refused: %s", name, target.user_id, result.error)
        return result
    return ToolResult(True, output=output)
