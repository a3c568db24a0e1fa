"""The chat backend for the server: schema, mutators, the ``callBot`` action and ``bot.stream``.

``backend`` uses the bot configured by the environment (``SYNCED_STORE_BOT_PROVIDER``,
``SYNCED_STORE_BOT_PACE``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_MODEL``; the
default is the offline deterministic bot, which creates todo lists too: ``@bot todo Trip: tent,
map``). :func:`make_backend` takes an explicit one (a :class:`BotConfig`, a ``Bot``, or any
``bot.stream`` service such as the testing kit's scripted bots). What agents may use as tools
is ``tools.EXPOSE``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synced_store import BackendConfig, define_backend_config
from synced_store.bot import Bot, BotConfig, make_bot_service

from .actions import actions
from .lobby import on_room_init
from .mutators import mutators
from .schema import chat_schema
from .tools import EXPOSE, todo_planner

__all__ = ["backend", "make_backend"]


def make_backend(
    bot: BotConfig | Bot | Callable[[Any], Any] | None = None, *, lobby: bool = False
) -> BackendConfig:
    """The chat backend with ``bot`` behind ``bot.stream`` (None: from the environment);
    ``lobby``: a new room lists itself in the ``lobby`` instance (its ``on_init``, lobby.py)."""
    service: Callable[[Any], Any]
    if bot is None or isinstance(bot, BotConfig):
        service = make_bot_service(bot, planner=todo_planner)
    elif hasattr(bot, "stream"):
        service = make_bot_service(bot)
    else:
        service = bot  # a ready bot.stream service
    return define_backend_config(
        schema=chat_schema,
        mutators=mutators,
        hooks={"on_init": on_room_init} if lobby else {},
        actions=actions,
        services={"bot.stream": service},
        expose=EXPOSE,
        auto_join=True,  # whoever opens a room becomes a member ($users, $user_info)
    )


backend = make_backend(lobby=True)
