"""The todo app's schema and mutators, shared by the server and every client.

The mutators follow the mutator rules:

* explicit values, not toggles: ``setDone`` takes the wanted ``done`` value, so a replay after
  another user's change cannot flip it the wrong way;
* ids come from the call site (``await store.make_unique_id()``), never from inside a mutator;
* read before write: ``addTodo`` keeps the sort key of a row that already exists, so a replayed
  or duplicated call neither moves nor duplicates the todo;
* return, don't throw, when the goal already holds: deleting or completing a missing todo is
  a no-op.

This module imports only the standard library, pydantic and ``synced_store``, so the same code
runs on the server, in the Python client and in the browser (Pyodide).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from synced_store import define_backend_config, define_schema, table
from synced_store.core.context import MutationContext

__all__ = ["AddTodo", "DeleteTodo", "SetDone", "Todo", "backend", "schema"]

SCHEMA_VERSION = 1


class Todo(BaseModel):
    """One todo; rows are kept in creation order by their sort key."""

    id: str
    text: str = Field(min_length=1, max_length=1000)
    done: bool = False
    sortKey: str  # the sort key, also kept in the row for clients that only see values


class AddTodo(BaseModel):
    """Input of ``addTodo``: the id is made by the caller (``store.make_unique_id()``)."""

    id: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=1000)


class SetDone(BaseModel):
    """Input of ``setDone``: the value to set, never a toggle."""

    id: str
    done: bool


class DeleteTodo(BaseModel):
    """Input of ``deleteTodo``."""

    id: str


schema = define_schema(
    schema_version=SCHEMA_VERSION,
    tables={"todos": {"schema": table(Todo)}},
    mutators={
        "addTodo": {
            "description": "Add a todo (or update its text if it exists).",
            "input": AddTodo,
        },
        "setDone": {"description": "Mark a todo done or not done.", "input": SetDone},
        "deleteTodo": {"description": "Delete a todo.", "input": DeleteTodo},
    },
)


async def add_todo(ctx: MutationContext, input: AddTodo) -> None:
    """Create the todo at the end of the list, or update the text of an existing one."""
    todos = ctx.table("todos")
    existing = await todos.get(input.id)
    if existing is not None:
        await todos.set(input.id, {**existing, "text": input.text}, sort_key=existing["sortKey"])
        return
    sort_key = await ctx.get_next_sort_key("todos")
    todo = Todo(id=input.id, text=input.text, done=False, sortKey=sort_key)
    await todos.set(input.id, todo, sort_key=sort_key)


async def set_done(ctx: MutationContext, input: SetDone) -> None:
    """Set ``done`` to the given value (no-op if the todo is gone)."""
    todos = ctx.table("todos")
    existing = await todos.get(input.id)
    if existing is None or existing["done"] == input.done:
        return
    await todos.set(input.id, {**existing, "done": input.done}, sort_key=existing["sortKey"])


async def delete_todo(ctx: MutationContext, input: DeleteTodo) -> None:
    """Delete the todo (no-op if it is already gone)."""
    todos = ctx.table("todos")
    if await todos.has(input.id):
        await todos.delete(input.id)


backend = define_backend_config(
    schema=schema,
    mutators={"addTodo": add_todo, "setDone": set_done, "deleteTodo": delete_todo},
    # What AI agents may use as tools (synced-store mcp, create_app(..., mcp=True)).
    expose={"mutators": ["addTodo", "setDone", "deleteTodo"], "tables": ["todos"]},
)
