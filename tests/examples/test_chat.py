"""The seed's chat-with-bot app end to end: optimistic placeholder, streamed reply, actions
(durable, resumed after kill -9, retried then failed, cancelled), the bot's tool calls, on a
real server; the bot is scripted with the testing kit (``text_response`` & co.) unless the test
is about a provider."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from synced_store.bot import BotConfig, BotError, local_reply
from synced_store.client import connect
from synced_store.testing import (
    ServerProcess,
    TestHarness,
    create_local_runner,
    create_test_harness,
    error_response,
    seed_instance,
    sequential_responses,
    text_response,
    tool_call,
    wait_for_key_deleted,
    wait_for_key_exists,
    wait_for_key_match,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import make_backend  # noqa: E402
from examples.chat.mutators import MessageOwnershipError  # noqa: E402
from examples.chat.schema import parse_mention  # noqa: E402
from tests.bot.fake_openai import FakeOpenAI, Turn, fake_openai_server  # noqa: E402

pytestmark = pytest.mark.e2e
TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))
PROMPT = "@bot tell me a story"
WORDS = 30
STORY = local_reply("tell me a story", words=WORDS)


async def all_messages(ctx: Any) -> dict[str, Any]:
    return {k.item_key: v for k, v in await ctx.table("messages").entries()}


def jobs(data_dir: Path, instance_id: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(data_dir / f"{instance_id}.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        # The bot's jobs (not the room's listing in the lobby, a built-in '$external' job).
        return [
            dict(r) for r in conn.execute("SELECT * FROM jobs WHERE name = 'callBot' ORDER BY id")
        ]
    finally:
        conn.close()


def job_events(h: TestHarness, status: str) -> asyncio.Queue[dict[str, Any]]:
    """A queue receiving every job that ends with ``status`` (event based, no polling)."""
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    h.app.state.actions.on_job_finished.append(
        lambda inst, job: q.put_nowait(job) if job["status"] == status else None
    )
    return q


async def chat_harness(tmp_path: Path, bot: Any, **options: Any) -> TestHarness:
    return await create_test_harness(
        make_backend(bot), data_dir=tmp_path, instance_id="room", **options
    )


def test_mentions() -> None:
    assert parse_mention("@bot tell me a story") == "bot"
    assert parse_mention("@Claude-3 hi") == "Claude-3"
    assert parse_mention("@bot") is None  # needs whitespace after the name
    assert parse_mention("hi @bot there") is None
    assert parse_mention(" @bot hi") is None


async def test_reply_streams_to_other_clients_and_completes(tmp_path: Path) -> None:
    bot = text_response(STORY, pace=0.01)
    async with await chat_harness(tmp_path, bot) as h:
        done = job_events(h, "done")
        alice, net = await h.create_controlled_client("alice")
        bob = await h.create_client("bob")
        seen: list[dict[str, Any]] = []
        bob.subscribe(
            lambda ctx: ctx.table("messages").get("b1"), lambda v: seen.append(v) if v else None
        )

        net.outbound.disable_auto_flush()
        res = await alice.mutate.sendMessage(id="u1", text=PROMPT, botMessageId="b1")
        # Optimistic: both rows are there before anything reached the server.
        assert await alice.query(all_messages) == {
            "u1": {"id": "u1", "text": PROMPT, "role": "user", "senderId": "alice"},
            "b1": {
                "id": "b1",
                "text": "",
                "role": "assistant",
                "senderId": "bot",
                "status": "incomplete",
                "requestedBy": "alice",
            },
        }
        assert alice.pending_count == 1
        assert [m["type"] for m in await net.outbound.wait_for_held()] == ["push"]
        assert not res.confirmed.done()
        await net.outbound.enable_auto_flush()

        full = STORY
        final = await wait_for_key_match(
            bob,
            table="messages",
            key="b1",
            match=lambda v: v["status"] == "complete",
            timeout=TIMEOUT,
        )
        assert final == {
            "id": "b1",
            "text": full,
            "role": "assistant",
            "senderId": "bot",
            "status": "complete",
            "requestedBy": "alice",
        }
        partial = {v["text"] for v in seen if v["status"] == "incomplete" and v["text"]}
        assert len(partial) >= 3, f"expected several streamed updates, saw {len(partial)}"
        assert all(full.startswith(t) for t in partial)
        job = await asyncio.wait_for(done.get(), TIMEOUT)
        assert job["name"] == "callBot"
        assert job["output"] == {"success": True, "response": full}
        (row,) = jobs(tmp_path, "room")
        assert row["status"] == "done"
        assert row["attempts"] == 1
        # The bot got the conversation (mention stripped) and the one tool it may call.
        (request,) = bot.requests
        assert [(m.role, m.content) for m in request.messages] == [("user", "tell me a story")]
        assert request.tool_names() == ["createTodoList"]
        # Calling it again is a no-op gate: the reply is already complete.
        assert await alice.action.callBot(botName="bot", botMessageId="b1") == {
            "success": True,
            "response": full,
        }
        assert bot.calls == 1


async def test_no_mention_no_placeholder(tmp_path: Path) -> None:
    bot = text_response("never asked")
    async with await chat_harness(tmp_path, bot) as h:
        alice = await h.create_client("alice")
        r1 = await alice.mutate.sendMessage(id="u1", text="hello @bot", botMessageId="b1")
        r2 = await alice.mutate.sendMessage(id="u2", text="@bot no reply id")
        await asyncio.wait_for(asyncio.gather(r1.confirmed, r2.confirmed), TIMEOUT)
        assert set(await alice.query(all_messages)) == {"u1", "u2"}
        assert jobs(tmp_path, "room") == []
        assert bot.calls == 0


async def test_action_called_after_pending_mutation_sees_it(tmp_path: Path) -> None:
    bot = text_response("Cats sleep a lot.", pace=0.002)
    async with await chat_harness(tmp_path, bot) as h:
        alice = await h.create_client("alice")
        await alice.mutate.sendMessage(id="u1", text="@bot what about cats", botMessageId="b1")
        assert alice.pending_count == 1
        out = await alice.action.callBot(botName="bot", botMessageId="b1")
        assert out == {"success": True, "response": "Cats sleep a lot."}

        await alice.mutate.sendMessage(id="u2", text="@bot and dogs", botMessageId="b2")
        await alice.mutate.cancelMessage(id="b2")
        assert alice.pending_count == 2
        out = await alice.action.callBot(botName="bot", botMessageId="b2")
        assert out == {"success": False, "response": ""}  # it saw the pending cancel
        await alice.mutate.deleteMessage(id="b2")
        assert await alice.action.callBot(botName="bot", botMessageId="b2") == {"success": False}


async def test_failing_provider_ends_in_error_and_a_failed_job(tmp_path: Path) -> None:
    async with fake_openai_server(FakeOpenAI(status=500)) as llm:
        bot = BotConfig(provider="openai", base_url=llm.base_url, model="m")
        async with await chat_harness(
            tmp_path / "data",
            bot,
            action_options={"max_attempts": 3, "backoff_base": 0.01},
        ) as h:
            h.allowed_errors.append("failed for good")
            failed = job_events(h, "failed")
            alice = await h.create_client("alice")
            await alice.mutate.sendMessage(id="u1", text="@gpt hello", botMessageId="b1")
            job = await asyncio.wait_for(failed.get(), TIMEOUT)
            assert job["attempts"] == 3
            assert "HTTP 500: the model is overloaded" in job["error"]
            msg = await wait_for_key_match(
                alice,
                table="messages",
                key="b1",
                match=lambda v: v["status"] == "error",
                timeout=TIMEOUT,
            )
            assert msg["text"] == ""
            (row,) = jobs(tmp_path / "data", "room")
            assert (row["status"], row["attempts"]) == ("failed", 3)
            assert "HTTP 500" in row["last_error"]
        assert len(llm.requests) == 3
        assert llm.requests[0]["messages"] == [{"role": "user", "content": "hello"}]


async def test_openai_provider_streams_into_the_message(tmp_path: Path) -> None:
    async with fake_openai_server(FakeOpenAI(chunks=["Hi", " from", " the", " model"])) as llm:
        bot = BotConfig(provider="openai", base_url=llm.base_url, model="m")
        async with await chat_harness(tmp_path, bot) as h:
            alice = await h.create_client("alice")
            await alice.mutate.sendMessage(id="u1", text="@gpt hello", botMessageId="b1")
            msg = await wait_for_key_match(
                alice,
                table="messages",
                key="b1",
                match=lambda v: v["status"] == "complete",
                timeout=TIMEOUT,
            )
            assert msg["text"] == "Hi from the model"


async def test_a_provider_error_mid_stream_keeps_the_partial_reply(tmp_path: Path) -> None:
    bot = error_response("connection reset", after="Once upon")
    async with await chat_harness(tmp_path, bot, action_options={"max_attempts": 1}) as h:
        h.allowed_errors.append("failed for good")
        failed = job_events(h, "failed")
        alice = await h.create_client("alice")
        await alice.mutate.sendMessage(id="u1", text=PROMPT, botMessageId="b1")
        job = await asyncio.wait_for(failed.get(), TIMEOUT)
        assert "connection reset" in job["error"]
        msg = await wait_for_key_match(
            alice, table="messages", key="b1", match=lambda v: v["status"] == "error"
        )
        assert msg["text"] == "Once upon"


async def test_the_bot_sees_the_rooms_history(tmp_path: Path) -> None:
    bot = text_response("They talked about cats.")
    backend = make_backend(bot)
    await seed_instance(
        backend,
        tmp_path,
        "room",
        rows={
            "messages": {
                "m1": {"id": "m1", "text": "cats?", "role": "user", "senderId": "bob"},
                "m2": {
                    "id": "m2",
                    "text": "Cats!",
                    "role": "assistant",
                    "senderId": "bot",
                    "status": "complete",
                },
                "m3": {
                    "id": "m3",
                    "text": "half a rep",
                    "role": "assistant",
                    "senderId": "bot",
                    "status": "error",
                },
            }
        },
    )
    async with await create_test_harness(backend, data_dir=tmp_path, instance_id="room") as h:
        alice = await h.create_client("alice")
        await alice.mutate.sendMessage(id="u1", text="@bot what was said?", botMessageId="b1")
        await wait_for_key_match(
            alice, table="messages", key="b1", match=lambda v: v["status"] == "complete"
        )
    (request,) = bot.requests
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", "cats?"),
        ("assistant", "Cats!"),
        ("user", "what was said?"),
    ]


CAMPING = tool_call("createTodoList", {"title": "Camping", "items": ["tent", "stove"]})


async def test_the_bot_creates_a_todo_list_with_a_tool_call(tmp_path: Path) -> None:
    bot = sequential_responses(
        text_response("Let me make that list.", tool_calls=[CAMPING]),
        "Done: your list is ready.",
    )
    async with await chat_harness(tmp_path, bot) as h:
        alice, bob = await h.create_client("alice"), await h.create_client("bob")
        await alice.mutate.sendMessage(id="u1", text="@bot pack for camping", botMessageId="b1")
        todo = await wait_for_key_exists(bob, table="todoLists", key="b1-1", timeout=TIMEOUT)
        assert todo == {
            "id": "b1-1",
            "title": "Camping",
            "items": [{"text": "tent", "done": False}, {"text": "stove", "done": False}],
            "createdBy": "alice",
        }
        final = await wait_for_key_match(
            bob, table="messages", key="b1", match=lambda v: v["status"] == "complete"
        )
        assert final["text"] == "Let me make that list.\n\nDone: your list is ready."
    first, second = bot.requests
    params = first.tools[0]["function"]["parameters"]
    assert "id" not in params["properties"]  # the action fills it in
    assert params["required"] == ["title", "items"]
    assert [(m.role, m.content) for m in second.messages[-2:]] == [
        ("assistant", "Let me make that list."),
        ("tool", '{"committed":true,"mutator":"createTodoList"}'),
    ]
    assert second.messages[-2].tool_calls == (CAMPING,)
    assert second.messages[-1].tool_call_id == CAMPING.id


async def test_a_refused_tool_call_goes_back_to_the_bot(tmp_path: Path) -> None:
    empty = tool_call("createTodoList", {"title": "Nothing", "items": []})
    bot = sequential_responses(text_response(tool_calls=[empty]), "Sorry, that list was empty.")
    async with await chat_harness(tmp_path, bot) as h:
        alice = await h.create_client("alice")
        await alice.mutate.sendMessage(id="u1", text="@bot make a list", botMessageId="b1")
        final = await wait_for_key_match(
            alice, table="messages", key="b1", match=lambda v: v["status"] == "complete"
        )
        assert final["text"] == "Sorry, that list was empty."
        assert await alice.query(lambda ctx: ctx.table("todoLists").keys()) == []
    result = bot.requests[1].messages[-1]
    assert result.role == "tool"
    assert result.content.startswith("Error (invalid_input): invalid input for mutator")
    assert "items: List should have at least 1 item" in result.content


async def test_an_openai_compatible_model_calls_the_tool(tmp_path: Path) -> None:
    """The provider against a real HTTP server streaming tool_calls deltas: the list syncs to
    another client and the reply completes."""
    args = '{"title": "Groceries", "items": ["milk", "eggs"]}'
    state = FakeOpenAI(
        turns=[
            Turn(tool_calls=[{"id": "call_9", "name": "createTodoList", "arguments": args}]),
            Turn(chunks=["Your", " list", " is", " ready."]),
        ]
    )
    async with fake_openai_server(state) as llm:
        bot = BotConfig(provider="openai", base_url=llm.base_url, model="m")
        async with await chat_harness(tmp_path, bot) as h:
            alice, bob = await h.create_client("alice"), await h.create_client("bob")
            await alice.mutate.sendMessage(id="u1", text="@gpt groceries", botMessageId="b1")
            todo = await wait_for_key_exists(bob, table="todoLists", key="b1-1", timeout=TIMEOUT)
            assert [i["text"] for i in todo["items"]] == ["milk", "eggs"]
            final = await wait_for_key_match(
                bob, table="messages", key="b1", match=lambda v: v["status"] == "complete"
            )
            assert final["text"] == "Your list is ready."
    first, second = llm.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["createTodoList"]
    assert second["messages"][-2]["tool_calls"] == [
        {
            "id": "call_9",
            "type": "function",
            "function": {"name": "createTodoList", "arguments": args},
        }
    ]
    assert second["messages"][-1] == {
        "role": "tool",
        "content": '{"committed":true,"mutator":"createTodoList"}',
        "tool_call_id": "call_9",
    }


async def test_the_offline_bot_makes_todo_lists(tmp_path: Path) -> None:
    async with await chat_harness(tmp_path, BotConfig(pace=0, words=5)) as h:
        alice = await h.create_client("alice")
        await alice.mutate.sendMessage(
            id="u1", text="@bot todo Camping: tent, stove, map", botMessageId="b1"
        )
        final = await wait_for_key_match(
            alice, table="messages", key="b1", match=lambda v: v["status"] == "complete"
        )
        assert final["text"] == "Done: createTodoList."
        todo = await wait_for_key_exists(alice, table="todoLists", key="b1-1")
        assert todo["title"] == "Camping"
        assert [i["text"] for i in todo["items"]] == ["tent", "stove", "map"]


async def test_a_rerun_job_does_not_create_the_list_twice() -> None:
    """In memory (create_local_runner): the job dies after its tool call, the retry asks the
    same call again; the list's id comes from the reply, so there is still one list."""
    bot = sequential_responses(
        text_response(tool_calls=[CAMPING]),
        error_response("connection reset"),
        text_response(tool_calls=[CAMPING]),
        "All set.",
    )
    runner = create_local_runner(make_backend(bot), user_id="alice")
    await runner.mutate("sendMessage", {"id": "u1", "text": "@bot camping", "botMessageId": "b1"})
    job = runner.enqueued[0]
    with pytest.raises(BotError, match="connection reset"):
        await runner.run_enqueued()
    assert list(runner.rows("todoLists")) == ["b1-1"]
    assert runner.get("messages", "b1")["status"] == "error"
    out = await runner.action(job[0], job[1], user_id="alice", job_id=2)  # the retry
    assert out == {"success": True, "response": "All set."}
    assert list(runner.rows("todoLists")) == ["b1-1"]
    creates = [m for m in runner.mutations if m[0] == "createTodoList"]
    assert len(creates) == 2  # the second was a no-op
    assert runner.rows("todoLists")["b1-1"]["createdBy"] == "alice"


async def test_callbot_gates_in_memory() -> None:
    bot = text_response("hi")
    runner = create_local_runner(make_backend(bot), user_id="alice")
    await runner.mutate("sendMessage", {"id": "u1", "text": "@bot hi", "botMessageId": "b1"})
    with pytest.raises(MessageOwnershipError, match="only the user who asked"):
        await runner.action("callBot", {"botName": "bot", "botMessageId": "b1"}, user_id="bob")
    assert await runner.action("callBot", {"botName": "bot", "botMessageId": "nope"}) == {
        "success": False
    }
    assert bot.calls == 0
    assert await runner.run_enqueued() == [{"success": True, "response": "hi"}]
    assert runner.rows("activeReplies", private_of="alice") == {}


@pytest.mark.parametrize("how", ["cancel", "delete"])
async def test_cancelling_the_placeholder_stops_the_action(tmp_path: Path, how: str) -> None:
    words = 400  # ~8 s at this pace: it must stop long before
    full = local_reply("tell me a story", words=words)
    async with await chat_harness(tmp_path, text_response(full, pace=0.02)) as h:
        done = job_events(h, "done")
        alice = await h.create_client("alice")
        await alice.mutate.sendMessage(id="u1", text=PROMPT, botMessageId="b1")
        await wait_for_key_match(
            alice,
            table="messages",
            key="b1",
            match=lambda v: len(v["text"].split()) >= 3,
            timeout=TIMEOUT,
        )
        if how == "cancel":
            await alice.mutate.cancelMessage(id="b1")
        else:
            await alice.mutate.deleteMessage(id="b1")
        job = await asyncio.wait_for(done.get(), 3.0)
        assert job["output"]["success"] is False
        stopped_at = job["output"]["response"]
        assert full.startswith(stopped_at)
        assert len(stopped_at) < len(full) // 4
        if how == "cancel":
            msg = await wait_for_key_match(
                alice,
                table="messages",
                key="b1",
                match=lambda v: v["status"] == "cancelled",
                timeout=TIMEOUT,
            )
            assert full.startswith(msg["text"])
        else:
            await wait_for_key_deleted(alice, table="messages", key="b1", timeout=TIMEOUT)
        # A cancelled reply stays cancelled even if the action runs again.
        assert (await alice.action.callBot(botName="bot", botMessageId="b1"))["success"] is False


@pytest.mark.slow
async def test_kill_9_mid_stream_resumes_the_job(tmp_path: Path) -> None:
    words = 60
    env = {
        "SYNCED_STORE_BOT_PACE": "0.03",
        "SYNCED_STORE_BOT_WORDS": str(words),
        "SYNCED_STORE_BOT_PROVIDER": "local",
    }
    data = tmp_path / "data"
    server = ServerProcess("examples.chat.app:backend", data, pythonpath=[str(REPO)], env=env)
    await asyncio.to_thread(server.start)
    backend = make_backend(BotConfig(pace=0, words=1))  # the client runs mutators only
    alice = await connect(
        server.url,
        backend,
        instance_id="room",
        token="alice",
        user_id="alice",
        persist_path=tmp_path / "alice.db",
        reconnect_delay=(0.01, 0.1),
    )
    try:
        await alice.wait_for_server_data(TIMEOUT)
        res = await alice.mutate.sendMessage(id="u1", text=PROMPT, botMessageId="b1")
        await asyncio.wait_for(res.confirmed, TIMEOUT)
        partial = await wait_for_key_match(
            alice,
            table="messages",
            key="b1",
            match=lambda v: v["status"] == "incomplete" and len(v["text"].split()) >= 3,
            timeout=TIMEOUT,
        )
        server.kill()  # SIGKILL, mid-stream
        assert jobs(data, "room")[0]["status"] == "running"

        server = ServerProcess(
            "examples.chat.app:backend", data, port=server.port, pythonpath=[str(REPO)], env=env
        )
        await asyncio.to_thread(server.start)
        full = local_reply("tell me a story", words=words)
        final = await wait_for_key_match(
            alice, table="messages", key="b1", match=lambda v: v["status"] == "complete", timeout=30
        )
        assert final["text"] == full
        assert full.startswith(partial["text"])
        msgs = await alice.query(all_messages)
        assert sorted(msgs) == ["b1", "u1"]
        assert [m for m in msgs.values() if m["role"] == "user"] == [
            {"id": "u1", "text": PROMPT, "role": "user", "senderId": "alice"}
        ]
        # A round trip through the writer orders us after the job's outcome was recorded.
        r = await alice.mutate.cancelMessage(id="b1")  # a no-op on a complete message
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        (job,) = jobs(data, "room")
        assert job["status"] == "done"
        assert job["attempts"] == 2
    finally:
        await alice.close()
        server.kill()


@pytest.mark.slow
async def test_demo_chat_command_and_terminal_client(tmp_path: Path) -> None:
    import httpx

    from synced_store.testing import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "SYNCED_STORE_BOT_PROVIDER": "local"}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "synced_store.cli",
        "demo",
        "chat",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "--bot-pace",
        "0.005",
        "--bot-words",
        "12",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):  # bounded readiness polling of the child's port
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
            page = await http.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200
        assert "<html" in page.text.lower()

        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "synced_store.cli",
            "chat",
            "--url",
            f"ws://127.0.0.1:{port}",
            "--room",
            "lobby",
            "--user",
            "alice",
            "--idle-timeout",
            "20",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(
            client.communicate(b"hello room\n@bot\n@bot tell me a story\n"), 30
        )
        assert client.returncode == 0, err.decode()
        transcript = " ".join(out.decode().split())
        assert "alice: hello room" in transcript
        assert "alice: @bot alice:" in transcript  # no mention (no space): no reply
        assert "alice: @bot tell me a story" in transcript
        assert f"bot: {local_reply('tell me a story', words=12)} ✓" in transcript
    finally:
        server.terminate()
        banner, _ = await asyncio.wait_for(server.communicate(), 30)
    assert f"http://127.0.0.1:{port}/" in banner.decode()
    assert f"--url ws://127.0.0.1:{port}" in banner.decode()
