"""The server's platform: the registry of services behind ``ctx.platform.call``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UnknownNameError

__all__ = ["ServerPlatform"]


class ServerPlatform:
    """Calls services registered with ``define_backend_config(services=...)``."""

    def __init__(self, services: Mapping[str, Callable[..., Any]]) -> None:
        self._services = services

    def call(self, name: str, input: Any) -> Any:
        """Call service ``name`` with ``input``; returns whatever it returns (awaitable,
        async iterator or value). Unknown names raise :class:`UnknownNameError`."""
        try:
            fn = self._services[name]
        except KeyError:
            raise UnknownNameError(f"unknown platform service {name!r}") from None
        return fn(input)
