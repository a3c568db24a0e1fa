"""``create_mock_platform_caller``: a fake ``ctx.platform`` for tests, recording every call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UnknownNameError

__all__ = ["MockPlatformCaller", "create_mock_platform_caller"]


async def _constant(value: Any) -> Any:
    return value


class MockPlatformCaller:
    """``ctx.platform`` with canned services.

    A service is a callable (``input -> result``: a value, an awaitable or an async iterator,
    as real services return; a bot helper such as
    :func:`~synced_store.testing.text_response` is one) or a constant, returned as an
    awaitable. Calling a service that is not mocked raises
    :class:`~synced_store.errors.UnknownNameError` naming the mocked ones. Every call is
    recorded in :attr:`calls` as ``(name, input)``.
    """

    def __init__(self, services: Mapping[str, Any] | None = None) -> None:
        self.services: dict[str, Any] = dict(services or {})
        self.calls: list[tuple[str, Any]] = []

    def call(self, name: str, input: Any) -> Any:
        """Call service ``name`` (see the class doc)."""
        self.calls.append((name, input))
        try:
            service = self.services[name]
        except KeyError:
            mocked = ", ".join(sorted(self.services)) or "none"
            raise UnknownNameError(
                f"platform service {name!r} is not mocked (mocked: {mocked})"
            ) from None
        if callable(service):
            return service(input)
        return _constant(service)

    def set(self, name: str, service: Any) -> None:
        """Mock (or re-mock) service ``name``."""
        self.services[name] = service

    def calls_to(self, name: str) -> list[Any]:
        """The inputs of every call to ``name``, in order."""
        return [i for n, i in self.calls if n == name]

    def as_services(self) -> dict[str, Callable[[Any], Any]]:
        """The mocks as ``define_backend_config(services=...)`` / harness services, recorded
        here when the server calls them."""
        return {name: self._caller(name) for name in self.services}

    def _caller(self, name: str) -> Callable[[Any], Any]:
        def call(input: Any) -> Any:
            return self.call(name, input)

        return call


def create_mock_platform_caller(services: Mapping[str, Any] | None = None) -> MockPlatformCaller:
    """A mock platform: ``{"bot.stream": text_response("hi"), "env.get": {...}}``."""
    return MockPlatformCaller(services)
