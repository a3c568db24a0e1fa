"""create_local_runner and create_mock_platform_caller: a backend's mutators and actions run
in memory, with a fake platform, no server."""

from __future__ import annotations

from typing import Any

import pytest

from synced_store import UnknownNameError, ValidationError
from synced_store.testing import (
    create_local_runner,
    create_mock_platform_caller,
    text_response,
)

from .kit_app import backend


async def test_a_mutation_then_its_enqueued_action() -> None:
    platform = create_mock_platform_caller({"bot.stream": text_response("Paris, of course")})
    runner = create_local_runner(backend, platform=platform, user_id="alice")
    await runner.mutate("ask", {"id": "1", "text": "capital of France?"})
    assert runner.rows("entries") == {
        "1-a": {"text": "", "status": "streaming"},
        "1-q": {"text": "capital of France?", "by": "alice"},
    }
    assert runner.enqueued == [("answer", {"id": "1"}, "alice")]
    assert await runner.run_enqueued() == [{"text": "Paris, of course", "tools": []}]
    assert runner.get("entries", "1-a") == {"text": "Paris, of course", "status": "done"}
    assert runner.enqueued == []
    # The action committed one mutation per step, as the server would.
    writes = [(args["text"], args["status"]) for n, args, _ in runner.mutations if n == "write"]
    assert writes[-1] == ("Paris, of course", "done")
    steps = [t for t, s in writes if s == "streaming"]
    assert steps
    assert all("Paris, of course".startswith(t) for t in steps)
    assert platform.calls_to("bot.stream")[0]["messages"] == [
        {"role": "user", "content": "capital of France?"}
    ]


async def test_a_failing_mutation_rolls_back_alone() -> None:
    runner = create_local_runner(backend, rows={"entries": {"keep": {"text": "kept"}}})
    with pytest.raises(ValidationError, match="no booms"):
        await runner.mutate("ask", {"id": "2", "text": "boom"})
    assert runner.rows("entries") == {"keep": {"text": "kept"}}
    assert runner.enqueued == []
    assert runner.mutations == []
    with pytest.raises(ValidationError, match="input for mutator 'ask'"):
        await runner.mutate("ask", {"id": "3"})
    with pytest.raises(ValidationError, match="entries/bad"):
        runner.load({"entries": {"bad": {"nope": 1}}})


async def test_actions_called_directly_and_queries() -> None:
    runner = create_local_runner(
        backend,
        platform=create_mock_platform_caller({"bot.stream": text_response("42")}),
        rows={"entries": {"7-q": {"text": "meaning?"}}},
    )
    assert await runner.action("answer", {"id": "7"}, user_id="bob") == {"text": "42", "tools": []}
    texts = await runner.query(lambda ctx: ctx.table("entries").values())
    assert [t["text"] for t in texts] == ["42", "meaning?"]


async def test_the_mock_platform() -> None:
    platform = create_mock_platform_caller({"env.get": {"BASE_URL": "http://x"}, "echo": len})
    assert await platform.call("env.get", {}) == {"BASE_URL": "http://x"}
    assert platform.call("echo", "abc") == 3
    with pytest.raises(
        UnknownNameError, match=r"'blob.put' is not mocked \(mocked: echo, env.get\)"
    ):
        platform.call("blob.put", {"content": ""})
    assert platform.calls == [("env.get", {}), ("echo", "abc"), ("blob.put", {"content": ""})]
    platform.set("blob.put", {"hash": "h"})
    assert await platform.call("blob.put", {}) == {"hash": "h"}
    services = platform.as_services()
    assert set(services) == {"env.get", "echo", "blob.put"}
    assert services["echo"]("abcd") == 4
    assert platform.calls_to("echo") == ["abc", "abcd"]


async def test_without_a_platform_the_backends_services_run() -> None:
    runner = create_local_runner(backend)
    with pytest.raises(UnknownNameError, match=r"bot\.stream"):
        runner.platform.call("bot.stream", {})
    seen: list[Any] = []

    def service(x: Any) -> Any:
        seen.append(x)
        return text_response("ok")(x)

    from dataclasses import replace

    runner = create_local_runner(replace(backend, services={"bot.stream": service}))
    await runner.mutate("ask", {"id": "1", "text": "q"})
    await runner.run_enqueued()
    assert len(seen) == 1
    assert runner.platform.calls_to("bot.stream") == seen
