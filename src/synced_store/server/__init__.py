"""The ASGI server: WebSocket sync endpoint, one writer per instance, fan-out of pokes."""

from .app import create_app
from .auth import dev_authenticate

__all__ = ["create_app", "dev_authenticate"]
