"""The convergence property test's app and one seeded run, for any server setup (a "world"):
one process on SQLite (test_convergence.py), or three processes on PostgreSQL with kill -9
(test_convergence_processes.py).

A run has 2-6 clients doing concurrent, state-dependent mutations under reorder, duplication,
loss, disconnects and one server restart (or kill). It must end with every client equal to
the server's state (the rows its user may see), every mutation applied exactly once (an audit
row per mutation counts its applications), and no client holding rows it may not see.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Protocol

import orjson
from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.core.client_engine import ClientEngine
from synced_store.core.keys import is_visible_to
from synced_store.testing import ControlledTransport, has_inbound_type
from synced_store.types import RowKey

KEYS = [f"k{i}" for i in range(5)]
#: Every stored live row of an instance: ``RowKey -> (sort key, value)``.
Rows = dict[RowKey, tuple[str, Any]]


class World(Protocol):
    """Where a run happens: its server(s) and how clients reach them."""

    async def create_client(
        self, user_id: str, instance_id: str, n: int
    ) -> tuple[Any, ControlledTransport]:
        """The ``n``-th client of a run (synced), and its controlled network."""

    async def restart(self, rng: random.Random) -> None:
        """Restart the server, or kill -9 one of the servers (a fault)."""

    async def settled(self) -> None:
        """Return once every server is up again (the run is healing)."""

    async def server_rows(self, instance_id: str) -> Rows:
        """Every committed live row of the instance, read from storage."""

    def clients_closed(self) -> None:
        """The run closed its clients."""


def stored_rows(rows: list[tuple[str, str, str, str, str]]) -> Rows:
    """``(ns, table, item, sort key, value JSON)`` rows as :data:`Rows`."""
    return {RowKey(ns, t, i): (sk, orjson.loads(v)) for ns, t, i, sk, v in rows}


def _visible(rows: Rows, user_id: str) -> Rows:
    return {k: v for k, v in rows.items() if is_visible_to(k.ns, user_id)}


class Op(BaseModel):
    tag: str
    key: str = "k0"
    amount: int = 0
    text: str = ""


schema = define_schema(
    schema_version=1,
    tables={"counters": table(), "audit": table(), "notes": table(), "items": table()},
    mutators={
        name: {"input": Op}
        for name in ("inc", "set", "delete", "sum", "note", "append", "rejectOnServer")
    },
)


async def _audit(ctx: Any, tag: str) -> None:
    # Counts how many times the server applied this mutation (must end at exactly 1).
    cur = await ctx.table("audit").get(tag)
    await ctx.table("audit").set(tag, (cur or 0) + 1)


async def inc(ctx: Any, op: Op) -> None:
    cur = await ctx.table("counters").get(op.key)
    await ctx.table("counters").set(op.key, (cur or 0) + op.amount)
    await _audit(ctx, op.tag)


async def set_(ctx: Any, op: Op) -> None:
    await ctx.table("counters").set(op.key, op.amount)
    await _audit(ctx, op.tag)


async def delete(ctx: Any, op: Op) -> None:
    await ctx.table("counters").delete(op.key)
    await _audit(ctx, op.tag)


async def sum_(ctx: Any, op: Op) -> None:
    # State-dependent over a scan: writes the sum of all other counters into "total".
    total = sum(v for k, v in await ctx.table("counters").scan(prefix="k").entries())
    await ctx.table("counters").set("total", total)
    await _audit(ctx, op.tag)


async def note(ctx: Any, op: Op) -> None:
    mine = ctx.private_of_user(ctx.user_id).table("notes")
    cur = await mine.get("n")
    await mine.set("n", (cur or "") + op.text)
    await _audit(ctx, op.tag)


async def append(ctx: Any, op: Op) -> None:
    sk = await ctx.get_next_sort_key("items")
    await ctx.table("items").set(op.tag, {"text": op.text}, sort_key=sk)
    await _audit(ctx, op.tag)


async def reject_on_server(ctx: Any, op: Op) -> None:
    await ctx.table("counters").set(op.key, -1000)
    await _audit(ctx, op.tag)
    if ctx.is_server:
        raise RuntimeError("no")


backend = define_backend_config(
    schema=schema,
    mutators={
        "inc": inc,
        "set": set_,
        "delete": delete,
        "sum": sum_,
        "note": note,
        "append": append,
        "rejectOnServer": reject_on_server,
    },
)


def _client_view(client: Any) -> dict[RowKey, Any]:
    return {key: (sk, value) for key, sk, value in client.engine.store.rows()}


def _assert_rebase_invariant(client: Any, seed: int) -> None:
    """The live view equals the snapshot with every pending mutation replayed from scratch."""
    engine = client.engine
    fresh = ClientEngine(engine.config, user_id=engine.user_id, client_id=engine.client_id)
    fresh.restore(
        cookie=engine.cookie,
        last_mutation_id=engine.last_mutation_id,
        rows=engine.snapshot_rows(),
        pending=[(m.id, m.name, m.args) for m in engine.pending],
    )
    got = _client_view(client)
    want = {key: (sk, value) for key, sk, value in fresh.store.rows()}
    assert got == want, f"seed {seed}: optimistic view differs from a replay from scratch"


async def run_seed(world: World, seed: int) -> None:
    rng = random.Random(seed)
    instance_id = f"conv-{seed}"
    n = rng.randint(2, 6)
    clients = []
    for i in range(n):
        c, net = await world.create_client(f"user{i % 3}", instance_id, i)
        clients.append((c, net))
    made: dict[str, tuple[Any, str]] = {}  # tag -> (MutationResult, mutator)
    restarted = False
    steps = rng.randint(15, 45)
    for step in range(steps):
        r = rng.random()
        c, net = rng.choice(clients)
        if r < 0.55:
            name = rng.choices(
                ["inc", "set", "delete", "sum", "note", "append", "rejectOnServer"],
                weights=[6, 2, 1, 2, 2, 2, 1],
            )[0]
            tag = f"s{seed}-{step}-{c.client_id}"
            op = {
                "tag": tag,
                "key": rng.choice(KEYS),
                "amount": rng.randint(-3, 9),
                "text": rng.choice("abcxyz"),
            }
            res = await getattr(c.mutate, name)(op)
            made[tag] = (res, name)
        elif r < 0.65:
            q = rng.choice([net.inbound, net.outbound])
            if q.auto_flush:
                q.disable_auto_flush()
            else:
                await q.enable_auto_flush()
        elif r < 0.72:
            # Reorder: deliver a push_response (or any frame) ahead of older held frames.
            if not await net.inbound.flush_matching(has_inbound_type("push_response")):
                await net.inbound.flush_one()
            await net.outbound.flush_one()
        elif r < 0.77:
            # Duplicate held frames (not the handshake: a network cannot invent a second one).
            rng.choice([net.inbound, net.outbound]).duplicate(
                lambda m: type(m) is list or m["type"] != "connect"
            )
        elif r < 0.82:
            # Loss: held frames vanish, and the connection breaks (as it does with TCP).
            net.inbound.remove(lambda m: True)
            net.outbound.remove(lambda m: True)
            await net.simulate_disconnect(block_reconnect=False)
        elif r < 0.88:
            if net.blocked:
                net.simulate_reconnect()
            else:
                await net.simulate_disconnect(block_reconnect=True)
        elif r < 0.90 and not restarted:
            restarted = True
            await world.restart(rng)
        else:
            for _ in range(rng.randint(1, 5)):
                await asyncio.sleep(0)  # let the network and the writer make progress
        _assert_rebase_invariant(rng.choice(clients)[0], seed)
    # Heal everything and wait for quiescence.
    for _, net in clients:
        net.simulate_reconnect()
        await net.inbound.enable_auto_flush()
        await net.outbound.enable_auto_flush()
    for c, _ in clients:
        await c.wait_for_sync(timeout=30)
    await world.settled()
    # Every mutation is confirmed, so nothing is in flight: the database's rows are final.
    stored = await world.server_rows(instance_id)
    for c, _ in clients:
        mine = _visible(stored, c.user_id)
        await c.wait_until(lambda c=c, mine=mine: _client_view(c) == mine, timeout=30)
    # Exactly once: every mutation made is applied once on the server.
    any_view = _visible(stored, "nobody")
    for tag, (res, name) in made.items():
        key = RowKey("", "audit", tag)
        if name == "rejectOnServer":
            assert key not in any_view, f"seed {seed}: rejected mutation {tag} left effects"
            continue
        assert any_view.get(key) == ("", 1), (
            f"seed {seed}: mutation {tag} ({name}) applied {any_view.get(key)} times"
        )
        assert res.confirmed.done()
        assert res.confirmed.exception() is None
    for c, _ in clients:
        for key in _client_view(c):
            assert is_visible_to(key.ns, c.user_id), f"seed {seed}: {c.user_id} holds {key}"
        await c.close()
    world.clients_closed()
