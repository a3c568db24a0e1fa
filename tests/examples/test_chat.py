"""The seed's chat-with-bot app end to end: optimistic placeholder, streamed reply, actions
(durable, resumed after kill -9, retried then failed, cancelled), on a real server."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from synced_store.bot import BotConfig, local_reply
from synced_store.client import connect
from synced_store.testing import (
    ServerProcess,
    TestHarness,
    create_test_harness,
    wait_for_key_deleted,
    wait_for_key_match,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.app import make_backend  # noqa: E402
from examples.chat.schema import parse_mention  # noqa: E402
from tests.bot.fake_openai import FakeOpenAI, fake_openai_server  # noqa: E402

pytestmark = pytest.mark.e2e
TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))
PROMPT = "@bot tell me a story"
WORDS = 30


async def all_messages(ctx: Any) -> dict[str, Any]:
    return {k.item_key: v for k, v in await ctx.table("messages").entries()}


def jobs(data_dir: Path, instance_id: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(data_dir / f"{instance_id}.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]
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
    async with await chat_harness(tmp_path, BotConfig(pace=0.01, words=WORDS)) as h:
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

        full = local_reply("tell me a story", words=WORDS)
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
        # Calling it again is a no-op gate: the reply is already complete.
        assert await alice.action.callBot(botName="bot", botMessageId="b1") == {
            "success": True,
            "response": full,
        }


async def test_no_mention_no_placeholder(tmp_path: Path) -> None:
    async with await chat_harness(tmp_path, BotConfig(pace=0, words=3)) as h:
        alice = await h.create_client("alice")
        r1 = await alice.mutate.sendMessage(id="u1", text="hello @bot", botMessageId="b1")
        r2 = await alice.mutate.sendMessage(id="u2", text="@bot no reply id")
        await asyncio.wait_for(asyncio.gather(r1.confirmed, r2.confirmed), TIMEOUT)
        assert set(await alice.query(all_messages)) == {"u1", "u2"}
        assert jobs(tmp_path, "room") == []


async def test_action_called_after_pending_mutation_sees_it(tmp_path: Path) -> None:
    async with await chat_harness(tmp_path, BotConfig(pace=0.002, words=12)) as h:
        alice = await h.create_client("alice")
        await alice.mutate.sendMessage(id="u1", text="@bot what about cats", botMessageId="b1")
        assert alice.pending_count == 1
        out = await alice.action.callBot(botName="bot", botMessageId="b1")
        assert out == {"success": True, "response": local_reply("what about cats", words=12)}

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


@pytest.mark.parametrize("how", ["cancel", "delete"])
async def test_cancelling_the_placeholder_stops_the_action(tmp_path: Path, how: str) -> None:
    words = 400  # ~8 s at this pace: it must stop long before
    async with await chat_harness(tmp_path, BotConfig(pace=0.02, words=words)) as h:
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
        full = local_reply("tell me a story", words=words)
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
