"""The chat backend for the server: schema, mutators, the ``callBot`` action and ``bot.stream``.

``backend`` uses the bot configured by the environment (``SYNCED_STORE_BOT_PROVIDER``,
``SYNCED_STORE_BOT_PACE``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_MODEL``; the
default is the offline deterministic bot). :func:`make_backend` takes an explicit one.
"""

from __future__ import annotations

from synced_store import BackendConfig, define_backend_config
from synced_store.bot import Bot, BotConfig, make_bot_service

from .actions import actions
from .mutators import mutators
from .schema import chat_schema

__all__ = ["backend", "make_backend"]


def make_backend(bot: BotConfig | Bot | None = None) -> BackendConfig:
    """The chat backend with ``bot`` behind ``bot.stream`` (None: from the environment)."""
    return define_backend_config(
        schema=chat_schema,
        mutators=mutators,
        actions=actions,
        services={"bot.stream": make_bot_service(bot)},
    )


backend = make_backend()
