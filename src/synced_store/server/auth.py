"""Authentication and authorization seams.

``authenticate(token)`` maps a client's token to who it is: a user id string, an
:class:`Identity` (user id, claims, expiry), or None (refused). ``authorize(user_id,
instance_id, claims)`` then decides whether that user may open the instance, and whether it
may create it when it does not exist yet: it returns an :class:`Access` (or a bool: True is
``Access.CREATE``, False ``Access.DENY``). Both may be sync or async; an exception counts as a
refusal. Refusals close the connection with 4001 before anything is opened or created.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Access",
    "Authenticator",
    "Authorizer",
    "Identity",
    "authenticate_token",
    "authorize_instance",
    "dev_authenticate",
    "instance_matches",
    "open_authorize",
]

log = logging.getLogger("synced_store.server")

#: The claim of a token that lists the instances it may open: exact ids, or prefixes ending
#: in ``*`` (``["room-1", "team-42-*"]``).
INSTANCES_CLAIM = "instances"


@dataclass(frozen=True)
class Identity:
    """Who a token belongs to: ``user_id``, its ``claims`` and when it expires (a Unix time,
    or None). A connection is closed with 4001 when its token expires."""

    user_id: str
    claims: Mapping[str, Any] = field(default_factory=dict)
    expires_at: float | None = None


class Access(enum.Enum):
    """What ``authorize`` allows."""

    #: Refused: the connection is closed with 4001.
    DENY = "deny"
    #: Open the instance if it exists; refused (4001) if it does not (nothing is created).
    OPEN = "open"
    #: Open the instance, creating it if it does not exist.
    CREATE = "create"


#: ``authenticate(token) -> user_id | Identity | None`` (sync or async).
Authenticator = Callable[[str | None], "str | Identity | Awaitable[str | Identity | None] | None"]
#: ``authorize(user_id, instance_id, claims) -> Access | bool`` (sync or async).
Authorizer = Callable[[str, str, Mapping[str, Any]], "Access | bool | Awaitable[Access | bool]"]


def dev_authenticate(token: str | None) -> str | None:
    """INSECURE development default: the token *is* the user id. Never use in production."""
    if not token or "/" in token or len(token) > 128:
        return None
    return token


def instance_matches(patterns: Any, instance_id: str) -> bool:
    """True if ``instance_id`` is one of ``patterns`` (a list of exact ids and ``prefix*``)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list | tuple):
        return False
    for p in patterns:
        if not isinstance(p, str) or not p:
            continue
        if p.endswith("*"):
            if instance_id.startswith(p[:-1]):
                return True
        elif p == instance_id:
            return True
    return False


def open_authorize(user_id: str, instance_id: str, claims: Mapping[str, Any]) -> Access:
    """The default ``authorize``: a token with an ``instances`` claim opens (and creates) only
    the instances it lists; without that claim every authenticated user may open and create
    every instance. Apps with rooms and members pass their own."""
    if INSTANCES_CLAIM in claims:
        ok = instance_matches(claims[INSTANCES_CLAIM], instance_id)
        return Access.CREATE if ok else Access.DENY
    return Access.CREATE


def _valid_user_id(value: object) -> bool:
    return isinstance(value, str) and bool(value) and "/" not in value and len(value) <= 128


async def authenticate_token(auth: Authenticator, token: str | None) -> Identity | None:
    """Run an authenticator; any exception or invalid result counts as a refusal (logged)."""
    try:
        result: Any = auth(token)
        if inspect.isawaitable(result):
            result = await result
    except Exception:
        log.exception("authenticate() raised; refusing the connection")
        return None
    if result is None:
        return None
    identity = Identity(result) if isinstance(result, str) else result
    if not isinstance(identity, Identity) or not _valid_user_id(identity.user_id):
        log.error("authenticate() returned an invalid identity %r; refusing", result)
        return None
    if not _valid_expiry(identity.expires_at):
        # The endpoint compares it with time.time() and arms a timer on it: a string would
        # fail there (1011), NaN would never expire.
        log.error(
            "authenticate() returned expires_at=%r (not a Unix time); refusing", identity.expires_at
        )
        return None
    return identity


def _valid_expiry(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


async def authorize_instance(authorize: Authorizer, identity: Identity, instance_id: str) -> Access:
    """Run an authorizer; any exception or unknown result counts as :attr:`Access.DENY`."""
    try:
        result: Any = authorize(identity.user_id, instance_id, identity.claims)
        if inspect.isawaitable(result):
            result = await result
    except Exception:
        log.exception("authorize() raised; refusing %s on %s", identity.user_id, instance_id)
        return Access.DENY
    if result is True:
        return Access.CREATE
    if result is False or result is None:
        return Access.DENY
    if isinstance(result, Access):
        return result
    log.error("authorize() returned %r (expected Access or bool); refusing", result)
    return Access.DENY
