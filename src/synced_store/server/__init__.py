"""The ASGI server: WebSocket sync endpoint, one writer per instance, fan-out of pokes."""

from .app import create_app
from .auth import Access, Identity, dev_authenticate
from .jwt_auth import JwtAuthenticator, mint_token
from .limits import Retention, ServerLimits

__all__ = [
    "Access",
    "Identity",
    "JwtAuthenticator",
    "Retention",
    "ServerLimits",
    "create_app",
    "dev_authenticate",
    "mint_token",
]
