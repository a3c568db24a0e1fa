"""An agent on the todo list: a model that reads and writes the list through tools.

Start a server first (from the repository root)::

    synced-store serve examples.todo:backend --data-dir /tmp/todo-data

then ask the agent (offline, the deterministic local bot plans a tool call from a command)::

    python -m examples.todo.agent --user alice '/addTodo {"id": "t1", "text": "buy milk"}'

or with a real model behind any OpenAI-compatible endpoint::

    OPENAI_API_KEY=... python -m examples.todo.agent --provider openai "add milk and eggs"

Every write the model makes is an ordinary mutation of the agent's client: it shows up at once
on every other client of the list (``python -m examples.todo.client --watch``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__:
    from .app import backend
else:  # run as a file: python examples/todo/agent.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from examples.todo.app import backend

from synced_store.bot import BotConfig, StreamedText, make_bot_service
from synced_store.client import SyncedStoreClient, connect
from synced_store.tools import ClientTarget, define_tools

#: At most this many model turns (each may ask for tool calls) per request.
MAX_TURNS = 5
SYSTEM = (
    "You manage a shared todo list. Use the tools to read and change it; ids of new todos "
    "are short unique strings you choose."
)


async def run_agent(
    store: SyncedStoreClient,
    bot: Callable[[Any], Any],
    prompt: str,
    *,
    on_text: Callable[[str], None] = lambda text: None,
) -> str:
    """Answer ``prompt``: stream the model's reply (``on_text`` gets the text so far), run the
    tool calls it asks for on ``store``, send the results back, until it answers in text."""
    tools = define_tools(backend)  # what examples/todo/app.py exposes
    target = ClientTarget(store)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": prompt},
    ]
    for _ in range(MAX_TURNS):
        request = {"botName": "agent", "messages": messages, "tools": tools.openai()}
        async with StreamedText(bot(request)) as reply:
            async for text in reply:
                on_text(text)
        if not reply.tool_calls:
            return reply.text
        messages.append(
            {
                "role": "assistant",
                "content": reply.text,
                "tool_calls": [call.to_openai() for call in reply.tool_calls],
            }
        )
        for call in reply.tool_calls:
            result = await tools.call(target, call.name, call.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result.text()})
    return "(stopped: too many tool rounds)"


async def main_async(args: argparse.Namespace) -> None:
    """Connect, answer the prompt, print the reply as it streams."""
    bot = make_bot_service(BotConfig.from_env(provider=args.provider, pace=args.pace))
    store = await connect(args.url, backend, instance_id=args.instance, token=args.user)
    try:
        printed = 0

        def show(text: str) -> None:
            nonlocal printed
            print(text[printed:], end="", flush=True)
            printed = len(text)

        final = await run_agent(store, bot, args.prompt, on_text=show)
        print(final[printed:])
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the agent once."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("prompt", help="what to ask the agent")
    p.add_argument("--url", default="ws://127.0.0.1:8000", help="server base URL")
    p.add_argument("--instance", default="my-list", help="instance (list) id")
    p.add_argument("--user", default="alice", help="user (the token, with dev auth)")
    p.add_argument("--provider", default=None, help="local (default) or openai")
    p.add_argument("--pace", type=float, default=None, help="local bot: seconds per word")
    asyncio.run(main_async(p.parse_args(argv)))


if __name__ == "__main__":
    main()
