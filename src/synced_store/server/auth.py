"""Authentication seam: a callable mapping a client's token to a user id (or None: refused)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

__all__ = ["Authenticator", "authenticate_token", "dev_authenticate"]

log = logging.getLogger("synced_store.server")

#: ``authenticate(token) -> user_id | None`` (sync or async).
Authenticator = Callable[[str | None], "str | Awaitable[str | None] | None"]


def dev_authenticate(token: str | None) -> str | None:
    """INSECURE development default: the token *is* the user id. Never use in production."""
    if not token or "/" in token or len(token) > 128:
        return None
    return token


async def authenticate_token(auth: Authenticator, token: str | None) -> str | None:
    """Run an authenticator; any exception counts as a refusal (and is logged)."""
    try:
        result = auth(token)
        if inspect.isawaitable(result):
            result = await result
    except Exception:
        log.exception("authenticate() raised; refusing the connection")
        return None
    if result is None:
        return None
    if not isinstance(result, str) or not result or "/" in result or len(result) > 128:
        log.error("authenticate() returned an invalid user id %r; refusing", result)
        return None
    return result
