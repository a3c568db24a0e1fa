"""start_eagerly: a coroutine runs in the caller until it suspends, then in its own task."""

from __future__ import annotations

import asyncio

import pytest

from synced_store.server.eager import start_eagerly


async def test_a_coroutine_that_never_suspends_finishes_in_the_caller() -> None:
    done: list[str] = []

    async def work() -> None:
        done.append("ran")

    assert start_eagerly(work()) is None
    assert done == ["ran"]


async def test_a_suspending_coroutine_runs_up_to_its_first_await_then_in_a_task() -> None:
    steps: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def work() -> None:
        steps.append("before")
        value = await gate
        steps.append(f"after {value}")
        await asyncio.sleep(0)  # a bare yield is passed through too
        steps.append("end")

    task = start_eagerly(work())
    assert steps == ["before"]  # synchronously, before the caller awaits anything
    assert task is not None
    assert not task.done()
    gate.set_result(42)
    await asyncio.wait_for(task, 5)
    assert steps == ["before", "after 42", "end"]


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits() -> None:
    cleaned: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def work() -> None:
        try:
            await gate
        finally:
            cleaned.append("finally")

    task = start_eagerly(work())
    assert task is not None
    await asyncio.sleep(0)  # the task has started driving the coroutine
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]
    assert gate.cancelled()


async def test_errors_before_and_after_the_first_suspension() -> None:
    async def fails_now() -> None:
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        start_eagerly(fails_now())

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise ValueError("later")

    task = start_eagerly(fails_later())
    assert task is not None
    with pytest.raises(ValueError, match="later"):
        await task


async def test_cancelling_the_task_between_bare_yields_throws_into_the_coroutine() -> None:
    """A cancel that finds the task ready to run (no future to cancel) is thrown in."""
    cleaned: list[str] = []

    async def work() -> None:
        try:
            for _ in range(10_000):  # bare yields: the task never waits on a future
                await asyncio.sleep(0)
        finally:
            cleaned.append("finally")

    task = start_eagerly(work())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]
