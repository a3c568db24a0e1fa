"""Subscription-based waits: subscribe, check each result, resolve on the first match."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from ..client.store import SyncedStoreClient
from ..core.context import ReadContext

__all__ = [
    "DEFAULT_TIMEOUT",
    "wait_for",
    "wait_for_all_clients",
    "wait_for_key_deleted",
    "wait_for_key_exists",
    "wait_for_key_match",
    "wait_for_value",
]

#: Default bound of every wait, in seconds.
DEFAULT_TIMEOUT = 10.0


async def wait_for(
    client: SyncedStoreClient,
    query_fn: Callable[[ReadContext], Any],
    predicate: Callable[[Any], bool] = bool,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    description: str = "",
) -> Any:
    """Wait until ``predicate(query_fn result)`` holds on ``client``; returns the result.

    Raises ``TimeoutError`` naming ``description`` and the last result seen.
    """
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    last: list[Any] = [None]

    def on_result(result: Any) -> None:
        last[0] = result
        if not fut.done() and not isinstance(result, Exception) and predicate(result):
            fut.set_result(result)

    unsubscribe = client.subscribe(query_fn, on_result)
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        raise TimeoutError(
            f"timed out after {timeout}s waiting for {description or 'condition'}; "
            f"last result: {last[0]!r:.300}"
        ) from None
    finally:
        unsubscribe()


def _getter(table: str, key: str, private: bool) -> Callable[[ReadContext], Any]:
    async def q(ctx: ReadContext) -> Any:
        t = ctx.private_of_user(ctx.user_id).table(table) if private else ctx.table(table)
        return (await t.has(key), await t.get(key))

    return q


async def wait_for_value(
    client: SyncedStoreClient,
    *,
    table: str,
    key: str,
    value: Any,
    private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """Wait until row ``table/key`` equals ``value``."""
    res = await wait_for(
        client,
        _getter(table, key, private),
        lambda r: r[1] == value,
        timeout=timeout,
        description=f"{table}/{key} == {value!r:.100}",
    )
    return res[1]


async def wait_for_key_exists(
    client: SyncedStoreClient,
    *,
    table: str,
    key: str,
    private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """Wait until row ``table/key`` exists; returns its value."""
    res = await wait_for(
        client,
        _getter(table, key, private),
        lambda r: r[0],
        timeout=timeout,
        description=f"{table}/{key} exists",
    )
    return res[1]


async def wait_for_key_deleted(
    client: SyncedStoreClient,
    *,
    table: str,
    key: str,
    private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Wait until row ``table/key`` does not exist."""
    await wait_for(
        client,
        _getter(table, key, private),
        lambda r: not r[0],
        timeout=timeout,
        description=f"{table}/{key} deleted",
    )


async def wait_for_key_match(
    client: SyncedStoreClient,
    *,
    table: str,
    key: str,
    match: Callable[[Any], bool],
    private: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Any:
    """Wait until row ``table/key`` exists and ``match(value)`` is true; returns the value."""
    res = await wait_for(
        client,
        _getter(table, key, private),
        lambda r: r[0] and match(r[1]),
        timeout=timeout,
        description=f"{table}/{key} matches",
    )
    return res[1]


async def wait_for_all_clients(
    clients: Sequence[SyncedStoreClient],
    query_fn: Callable[[ReadContext], Any],
    predicate: Callable[[Any], bool] = bool,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    description: str = "",
) -> list[Any]:
    """Wait until the predicate holds on every client; returns each client's result."""
    return list(
        await asyncio.gather(
            *(
                wait_for(c, query_fn, predicate, timeout=timeout, description=description)
                for c in clients
            )
        )
    )
