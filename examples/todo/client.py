"""A small todo client: connects, adds todos, subscribes and prints the list as it changes.

Start a server first (from the repository root)::

    synced-store serve examples.todo:backend --data-dir /tmp/todo-data

then, in another terminal::

    python -m examples.todo.client --user alice "buy milk" "write docs"
    python -m examples.todo.client --user bob --watch        # follow changes until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

if __package__:
    from .app import backend
else:  # run as a file: python examples/todo/client.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from examples.todo.app import backend

from synced_store.client import connect
from synced_store.core.context import ReadContext


async def list_todos(ctx: ReadContext) -> list[dict[str, Any]]:
    """Every todo, in creation order."""
    return await ctx.table("todos").values()


def render(todos: list[dict[str, Any]]) -> str:
    """The list as text, one ``[x] text`` line per todo."""
    if not todos:
        return "(no todos)"
    return "\n".join(f"[{'x' if t['done'] else ' '}] {t['text']}  ({t['id']})" for t in todos)


async def run(args: argparse.Namespace) -> None:
    store = await connect(
        args.url, backend, instance_id=args.instance, token=args.user, persist_path=args.persist
    )
    try:
        await store.wait_for_server_data(timeout=args.timeout)
        for text in args.todos:
            await store.mutate.addTodo(id=await store.make_unique_id(), text=text)
        if args.done_first:
            todos = await store.query(list_todos)
            if todos:
                await store.mutate.setDone(id=todos[0]["id"], done=True)
        await store.wait_for_sync(timeout=args.timeout)

        def show(todos: list[dict[str, Any]]) -> None:
            print(f"--- {args.instance} ({len(todos)} todos)")
            print(render(todos), flush=True)

        unsubscribe = store.subscribe(list_todos, show)
        try:
            if args.watch:
                await asyncio.Event().wait()  # until Ctrl-C
            else:
                await asyncio.sleep(0)  # let the subscription deliver its first result
        finally:
            unsubscribe()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the client."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("todos", nargs="*", help="texts of todos to add")
    p.add_argument("--url", default="ws://127.0.0.1:8000", help="server base URL")
    p.add_argument("--instance", default="my-list", help="instance (list) id")
    p.add_argument("--user", default="alice", help="user (the token, with dev auth)")
    p.add_argument("--persist", default=None, help="local SQLite file (offline + restart)")
    p.add_argument("--done-first", action="store_true", help="mark the first todo done")
    p.add_argument("--watch", action="store_true", help="keep printing changes until Ctrl-C")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")
    args = p.parse_args(argv)
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        pass
    except TimeoutError:
        sys.exit(f"no answer from {args.url} within {args.timeout}s; is the server running?")


if __name__ == "__main__":
    main()
