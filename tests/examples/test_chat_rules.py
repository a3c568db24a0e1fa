"""The chat example's rules (docs/security.md) on a real server: only a message's sender edits
or deletes it, only the bot writes its replies, and a user has at most ``MAX_ACTIVE_REPLIES``
bot replies in progress.

Each rule is checked twice: an honest client refuses at once (its rows show the rule), and a
hostile client, running mutators that check nothing, is refused by the server (a permanent
mutation error whose optimistic effects roll back), with the server's data unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from synced_store import define_backend_config
from synced_store.bot import BotConfig, local_reply
from synced_store.client import SyncedStoreClient, connect
from synced_store.client.transport import WebSocketConnector, sync_url
from synced_store.errors import ActionError, MutationFailedError, PermissionDeniedError
from synced_store.testing import (
    ControlledConnector,
    TestHarness,
    create_test_harness,
    wait_for_key_exists,
    wait_for_key_match,
)

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from examples.chat.actions import actions  # noqa: E402
from examples.chat.app import make_backend  # noqa: E402
from examples.chat.lobby import add_room  # noqa: E402
from examples.chat.mutators import (  # noqa: E402
    MAX_ACTIVE_REPLIES,
    BotReplyLimitError,
    MessageOwnershipError,
)
from examples.chat.schema import (  # noqa: E402
    CreateTodoListInput,
    MessageIdInput,
    SendMessageInput,
    UpdateMessageInput,
    chat_schema,
    parse_mention,
)
from tests.bot.fake_openai import FakeOpenAI, fake_openai_server  # noqa: E402

pytestmark = pytest.mark.e2e
TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))
#: A reply that takes minutes: it is still streaming whenever the test looks.
ENDLESS = BotConfig(pace=0.05, words=5000)
HELLO = {"id": "u1", "text": "hello from alice", "role": "user", "senderId": "alice"}


# -- a hostile client: the seed's mutators, checking nothing --------------------------------


async def _raw_send(ctx: Any, input: SendMessageInput) -> None:
    messages = ctx.table("messages")
    row = {"id": input.id, "text": input.text, "role": "user", "senderId": ctx.user_id}
    await messages.set(input.id, row)
    bot = parse_mention(input.text)
    if bot is not None and input.botMessageId:
        reply = {"id": input.botMessageId, "text": "", "role": "assistant", "senderId": bot}
        await messages.set(
            input.botMessageId, {**reply, "status": "incomplete", "requestedBy": ctx.user_id}
        )


async def _raw_update(ctx: Any, input: UpdateMessageInput) -> None:
    current = await ctx.table("messages").get(input.id)
    if current is not None:
        row = {**current, "text": input.text, "status": input.status}
        await ctx.table("messages").set(input.id, row)


async def _raw_cancel(ctx: Any, input: MessageIdInput) -> None:
    current = await ctx.table("messages").get(input.id)
    if current is not None:
        await ctx.table("messages").set(input.id, {**current, "status": "cancelled"})


async def _raw_delete(ctx: Any, input: MessageIdInput) -> None:
    await ctx.table("messages").delete(input.id)


async def _raw_create_list(ctx: Any, input: CreateTodoListInput) -> None:
    items = [{"text": t, "done": False} for t in input.items]
    row = {"id": input.id, "title": input.title, "items": items, "createdBy": ctx.user_id}
    await ctx.table("todoLists").set(input.id, row)


HOSTILE = define_backend_config(
    schema=chat_schema,
    mutators={
        "sendMessage": _raw_send,
        "updateMessage": _raw_update,
        "cancelMessage": _raw_cancel,
        "deleteMessage": _raw_delete,
        "createTodoList": _raw_create_list,
        "addRoom": add_room,  # only rooms send it (a client's call is refused by the server)
    },
    actions=actions,
)


async def hostile_client(
    h: TestHarness, user: str, connector: ControlledConnector | None = None
) -> SyncedStoreClient:
    """A client of the room acting as ``user`` whose mutators skip every rule."""
    client = await connect(
        h.url,
        HOSTILE,
        instance_id=h.instance_id,
        token=user,
        user_id=user,
        connector=connector,
        reconnect_delay=(0.005, 0.05),
    )
    h.clients.append(client)
    await client.wait_for_server_data(TIMEOUT)
    return client


# -- helpers ----------------------------------------------------------------------------------


def server_messages(h: TestHarness) -> dict[str, Any]:
    """The ``messages`` rows committed in the server's database."""
    conn = sqlite3.connect(h.data_dir / f"{h.instance_id}.sqlite3")
    try:
        rows = conn.execute(
            "SELECT item, value FROM rows WHERE ns = '' AND tbl = 'messages' AND deleted = 0"
        ).fetchall()
    finally:
        conn.close()
    return {item: json.loads(value) for item, value in rows}


def server_jobs(h: TestHarness) -> list[dict[str, Any]]:
    """The action jobs in the server's database (the durable outbox)."""
    conn = sqlite3.connect(h.data_dir / f"{h.instance_id}.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        conn.close()
    for r in rows:
        r["input"] = json.loads(r["input"])
    return rows


async def message(client: SyncedStoreClient, key: str) -> Any:
    return await client.query(lambda ctx: ctx.table("messages").get(key))


async def refused(res: Any) -> MutationFailedError:
    """The server's refusal of mutation ``res`` (fails the test if it was accepted)."""
    with pytest.raises(MutationFailedError) as info:
        await asyncio.wait_for(res.confirmed, TIMEOUT)
    return info.value


def job_events(h: TestHarness, status: str) -> asyncio.Queue[dict[str, Any]]:
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    h.app.state.actions.on_job_finished.append(
        lambda inst, job: q.put_nowait(job) if job["status"] == status else None
    )
    return q


async def harness(tmp_path: Path, bot: Any = ENDLESS, **options: Any) -> TestHarness:
    return await create_test_harness(
        make_backend(bot), data_dir=tmp_path, instance_id="room", **options
    )


# -- only the sender edits or deletes a message ---------------------------------------------


async def test_another_users_edit_and_delete_are_refused_at_once(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        bob = await h.create_client("bob")
        await asyncio.wait_for(
            (await alice.mutate.sendMessage(id="u1", text=HELLO["text"])).confirmed, TIMEOUT
        )
        assert await wait_for_key_exists(bob, table="messages", key="u1", timeout=TIMEOUT) == HELLO

        attempts = [
            ("updateMessage", {"id": "u1", "text": "bob was here", "status": "complete"}, "edit"),
            ("deleteMessage", {"id": "u1"}, "delete"),
            ("cancelMessage", {"id": "u1"}, "cancel"),
        ]
        for name, args, verb in attempts:
            with pytest.raises(MessageOwnershipError) as info:
                await getattr(bob.mutate, name)(args)
            assert isinstance(info.value, PermissionDeniedError)
            assert info.value.kind == "permission_denied"
            assert str(info.value) == f"only its sender (alice) may {verb} message u1"
        with pytest.raises(MessageOwnershipError, match="u1 already exists and is not yours"):
            await bob.mutate.sendMessage(id="u1", text="overwritten by bob")
        assert bob.pending_count == 0  # refused before anything was queued
        assert await message(bob, "u1") == HELLO
        assert await message(alice, "u1") == HELLO
        assert server_messages(h) == {"u1": HELLO}

        # The sender herself may edit and delete it.
        r = await alice.mutate.updateMessage(id="u1", text="hello, edited", status="complete")
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        await wait_for_key_match(
            bob, table="messages", key="u1", match=lambda v: v["text"] == "hello, edited"
        )
        await asyncio.wait_for((await alice.mutate.deleteMessage(id="u1")).confirmed, TIMEOUT)
        assert server_messages(h) == {}


async def test_another_users_edit_and_delete_are_refused_by_the_server(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        seen_by_alice: list[Any] = []
        alice.subscribe(lambda ctx: ctx.table("messages").get("u1"), seen_by_alice.append)
        mallory = await hostile_client(h, "mallory")
        failures: list[MutationFailedError] = []
        mallory.on_failed_mutation(failures.append)
        await asyncio.wait_for(
            (await alice.mutate.sendMessage(id="u1", text=HELLO["text"])).confirmed, TIMEOUT
        )
        await wait_for_key_exists(mallory, table="messages", key="u1", timeout=TIMEOUT)

        edit = await mallory.mutate.updateMessage(id="u1", text="pwned", status="complete")
        # Her own mutator let it through: the page would show it until the server answers.
        assert (await message(mallory, "u1"))["text"] == "pwned"
        err = await refused(edit)
        assert err.error_kind == "permission_denied"
        assert "only its sender (alice) may edit message u1" in err.message
        assert await message(mallory, "u1") == HELLO  # rolled back

        delete = await mallory.mutate.deleteMessage(id="u1")
        assert await message(mallory, "u1") is None
        err = await refused(delete)
        assert err.error_kind == "permission_denied"
        assert "only its sender (alice) may delete message u1" in err.message

        overwrite = await mallory.mutate.sendMessage(id="u1", text="now it is mine")
        err = await refused(overwrite)
        assert err.error_kind == "permission_denied"
        assert [(f.name, f.error_kind) for f in failures] == [
            ("updateMessage", "permission_denied"),
            ("deleteMessage", "permission_denied"),
            ("sendMessage", "permission_denied"),
        ]

        # A later commit reaches alice: nothing from mallory's attempts came before it.
        await asyncio.wait_for(
            (await alice.mutate.sendMessage(id="u2", text="still here")).confirmed, TIMEOUT
        )
        await wait_for_key_exists(mallory, table="messages", key="u2", timeout=TIMEOUT)
        assert await message(mallory, "u1") == HELLO
        assert await message(alice, "u1") == HELLO
        assert [v for v in seen_by_alice if v is not None] == [HELLO]
        assert server_messages(h)["u1"] == HELLO


# -- only the bot writes its replies ----------------------------------------------------------


async def test_a_client_cannot_write_a_bot_reply(tmp_path: Path) -> None:
    words = 40
    async with await harness(tmp_path, BotConfig(pace=0.01, words=words)) as h:
        alice = await h.create_client("alice")
        bob = await h.create_client("bob")
        alice2 = await hostile_client(h, "alice")  # alice herself, with a tampered client
        mallory = await hostile_client(h, "mallory")
        await alice.mutate.sendMessage(id="u1", text="@bot tell me a story", botMessageId="b1")
        await wait_for_key_exists(bob, table="messages", key="b1", timeout=TIMEOUT)

        # Not even the user who asked for it may write the reply.
        with pytest.raises(MessageOwnershipError, match="b1 is a bot reply: only the bot writes"):
            await alice.mutate.updateMessage(id="b1", text="fake reply", status="complete")
        for name, verb in (("cancelMessage", "cancel"), ("deleteMessage", "delete")):
            with pytest.raises(MessageOwnershipError) as info:
                await getattr(bob.mutate, name)(id="b1")
            assert str(info.value) == f"only alice, who asked for it, may {verb} the bot reply b1"
        assert bob.pending_count == 0

        await wait_for_key_exists(alice2, table="messages", key="b1", timeout=TIMEOUT)
        await wait_for_key_exists(mallory, table="messages", key="b1", timeout=TIMEOUT)
        forged = await alice2.mutate.updateMessage(id="b1", text="fake reply", status="complete")
        cancel = await mallory.mutate.cancelMessage(id="b1")
        delete = await mallory.mutate.deleteMessage(id="b1")
        for res in (forged, cancel, delete):
            assert (await refused(res)).error_kind == "permission_denied"

        # The bot's own stream was not disturbed.
        full = local_reply("tell me a story", words=words)
        for client in (alice, bob, alice2, mallory):
            final = await wait_for_key_match(
                client,
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
        assert server_messages(h)["b1"]["text"] == full
        # A finished reply is still not the user's to edit; but she may delete it.
        with pytest.raises(MessageOwnershipError):
            await alice.mutate.updateMessage(id="b1", text="fake reply", status="complete")
        await asyncio.wait_for((await alice.mutate.deleteMessage(id="b1")).confirmed, TIMEOUT)
        assert set(server_messages(h)) == {"u1"}


async def test_callbot_from_a_client_never_reruns_or_runs_anothers_reply(tmp_path: Path) -> None:
    async with fake_openai_server(FakeOpenAI(status=500)) as llm:
        bot = BotConfig(provider="openai", base_url=llm.base_url, model="m")
        async with await harness(
            tmp_path, bot, action_options={"max_attempts": 1, "backoff_base": 0.01}
        ) as h:
            h.allowed_errors.append("failed for good")
            failed = job_events(h, "failed")
            alice = await h.create_client("alice")
            bob = await h.create_client("bob")
            await alice.mutate.sendMessage(id="u1", text="@gpt hello", botMessageId="b1")
            await asyncio.wait_for(failed.get(), TIMEOUT)
            await wait_for_key_match(
                bob, table="messages", key="b1", match=lambda v: v["status"] == "error"
            )
            assert len(llm.requests) == 1
            with pytest.raises(ActionError, match="only the user who asked for the bot reply b1"):
                await bob.action.callBot(botName="gpt", botMessageId="b1")
            # The requester cannot re-run a failed reply either: each run may be a paid call.
            assert await alice.action.callBot(botName="gpt", botMessageId="b1") == {
                "success": False,
                "response": "",
            }
            assert len(llm.requests) == 1


# -- at most MAX_ACTIVE_REPLIES replies in progress per user ---------------------------------


async def test_a_reply_beyond_the_cap_is_refused_and_queues_no_job(tmp_path: Path) -> None:
    assert MAX_ACTIVE_REPLIES == 3
    async with await harness(tmp_path) as h:
        done = job_events(h, "done")
        alice = await h.create_client("alice")
        alice2 = await hostile_client(h, "alice")
        bob = await h.create_client("bob")
        for i in range(1, 4):
            r = await alice.mutate.sendMessage(id=f"u{i}", text="@bot go", botMessageId=f"b{i}")
            await asyncio.wait_for(r.confirmed, TIMEOUT)
        assert [j["input"]["botMessageId"] for j in server_jobs(h)] == ["b1", "b2", "b3"]

        with pytest.raises(BotReplyLimitError) as info:
            await alice.mutate.sendMessage(id="u4", text="@bot one more", botMessageId="b4")
        assert info.value.kind == "quota_exceeded"
        assert "at most 3" in str(info.value)
        assert alice.pending_count == 0
        assert await message(alice, "u4") is None  # refused as a whole: no message either

        # A tampered client gets the same answer from the server, and nothing is queued.
        await wait_for_key_exists(alice2, table="messages", key="b3", timeout=TIMEOUT)
        res = await alice2.mutate.sendMessage(id="u4", text="@bot one more", botMessageId="b4")
        err = await refused(res)
        assert err.error_kind == "quota_exceeded"
        assert "alice already has 3 bot replies in progress" in err.message
        assert await message(alice2, "u4") is None
        assert await message(alice2, "b4") is None
        assert not {"u4", "b4"} & set(server_messages(h))
        assert len(server_jobs(h)) == 3

        # Other messages, and other users, are not capped.
        r = await alice.mutate.sendMessage(id="u5", text="no bot in this one")
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        r = await bob.mutate.sendMessage(id="u6", text="@bot me too", botMessageId="b6")
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        assert len(server_jobs(h)) == 4

        # Stopping or deleting a reply frees its place.
        await alice.mutate.cancelMessage(id="b1")
        r = await alice.mutate.sendMessage(id="u7", text="@bot again", botMessageId="b7")
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        with pytest.raises(BotReplyLimitError):
            await alice.mutate.sendMessage(id="u8", text="@bot and again", botMessageId="b8")
        await alice.mutate.deleteMessage(id="b2")
        r = await alice.mutate.sendMessage(id="u8", text="@bot and again", botMessageId="b8")
        await asyncio.wait_for(r.confirmed, TIMEOUT)
        assert [j["input"]["botMessageId"] for j in server_jobs(h)] == [
            "b1",
            "b2",
            "b3",
            "b6",
            "b7",
            "b8",
        ]

        for client, key in [(alice, k) for k in ("b3", "b7", "b8")] + [(bob, "b6")]:
            await client.mutate.cancelMessage(id=key)
        for _ in range(6):
            await asyncio.wait_for(done.get(), TIMEOUT)


async def test_one_push_of_300_reply_requests_queues_3_jobs(tmp_path: Path) -> None:
    n = 300
    async with await harness(tmp_path) as h:
        done = job_events(h, "done")
        connector = ControlledConnector(WebSocketConnector(sync_url(h.url, h.instance_id)))
        mallory = await hostile_client(h, "mallory", connector)
        net = connector.transport
        await net.simulate_disconnect()
        pad = "x" * 80
        results = [
            await mallory.mutate.sendMessage(
                id=f"u{i:03d}", text=f"@bot {pad}", botMessageId=f"b{i:03d}"
            )
            for i in range(n)
        ]
        net.outbound.disable_auto_flush()
        net.simulate_reconnect()
        await net.outbound.wait_for_held(lambda m: m.get("type") == "connect", timeout=TIMEOUT)
        await net.outbound.flush_all()
        (push,) = await net.outbound.wait_for_held(
            lambda m: m.get("type") == "push", timeout=TIMEOUT
        )
        assert len(push["mutations"]) == n
        assert len(json.dumps(push)) > 30_000
        await net.outbound.enable_auto_flush()

        outcomes = await asyncio.wait_for(
            asyncio.gather(*(r.confirmed for r in results), return_exceptions=True), TIMEOUT
        )
        # The server keeps and reports a bounded number of errors per client (the latest):
        # every error reported is the cap's, and the first three were accepted.
        assert outcomes[:3] == [None, None, None]
        reported = [o for o in outcomes if o is not None]
        assert len(reported) >= 90
        assert all(
            isinstance(o, MutationFailedError) and o.error_kind == "quota_exceeded"
            for o in reported
        )
        assert isinstance(outcomes[-1], MutationFailedError)
        kept = ["b000", "b001", "b002", "u000", "u001", "u002"]
        assert sorted(server_messages(h)) == kept
        jobs = server_jobs(h)
        assert [j["input"]["botMessageId"] for j in jobs] == ["b000", "b001", "b002"]
        # Every refused request's optimistic rows are gone from the client too.
        mine = await mallory.query(lambda ctx: ctx.table("messages").keys())
        assert sorted(k.item_key for k in mine) == kept
        for key in ("b000", "b001", "b002"):
            await mallory.mutate.cancelMessage(id=key)
        for _ in range(3):
            await asyncio.wait_for(done.get(), TIMEOUT)


# -- a todo list is created once, by its creator ----------------------------------------------


async def test_another_users_todo_list_cannot_be_overwritten(tmp_path: Path) -> None:
    async with await harness(tmp_path) as h:
        alice = await h.create_client("alice")
        res = await alice.mutate.createTodoList(id="l1", title="Trip", items=["tent", "map"])
        await asyncio.wait_for(res.confirmed, TIMEOUT)
        again = await alice.mutate.createTodoList(id="l1", title="Other", items=["x"])
        await asyncio.wait_for(again.confirmed, TIMEOUT)  # hers: a no-op
        bob = await h.create_client("bob")
        mine = await wait_for_key_exists(bob, table="todoLists", key="l1", timeout=TIMEOUT)
        assert mine["title"] == "Trip"
        with pytest.raises(PermissionDeniedError, match="not yours"):
            await bob.mutate.createTodoList(id="l1", title="Mine now", items=["x"])
        mallory = await hostile_client(h, "mallory")
        err = await refused(
            await mallory.mutate.createTodoList(id="l1", title="Mine now", items=["x"])
        )
        assert err.error_kind == "permission_denied"
        assert await bob.query(lambda ctx: ctx.table("todoLists").get("l1")) == mine
