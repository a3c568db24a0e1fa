"""The hostile load of the soak (benchmarks/soak.py): the attacks of issue 9's list, each a
coroutine that runs until a deadline and counts what it opened and how the server answered.

Run as the attacker process: ``python -m benchmarks.attacks --port P --seconds S
--phase-seconds T --out FILE.json [--good-ids A,B] [--seed N] [--nice 10]``. It rotates
through :data:`ORDER`, one attack per phase of ``T`` seconds, and writes the schedule (which
attack ran when) and the counts to ``FILE.json``.

* ``stuck`` — 30 sockets at a time send ``connect`` to a large instance (36 MB) and never
  read (tests/rawws.py ``StuckClient``); one the server drops is replaced.
* ``error-flood`` — two connections push 1,000 unknown-mutator calls per frame as fast as the
  server takes them, in the well-behaved clients' room; each reconnects with
  ``last_mutation_id: 0`` (a replay of every error) when the server closes it.
* ``binary`` — connect, then a binary non-UTF-8 frame, in a loop; with a foreign
  ``Origin`` and a hostile instance id (``abc%0A``) in between.
* ``bad-text`` — the same with a *text* frame whose bytes are not UTF-8 (the WebSocket
  layer's 1007).
* ``rooms`` — a flood of new rooms: connect to a new instance, write one row, leave.
* ``oversize`` — a 9 MiB frame (deflated or not) after ``connect``.
* ``slowloris`` — 200 sockets send an HTTP request head one byte every 0.25 s, never ending
  it; one the server closes is reopened.
* ``deep`` — values nested 33 deep (a permanent ``value_too_deep`` error), 199 deep (over the
  value limit, under the parser's) and frames nested 250 deep (closed with 4003).
* ``fuzz`` — the frame fuzzer (benchmarks/fuzz_frames.py), two workers, its shared instance
  being the well-behaved clients' room.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
for _p in (str(ROOT), str(TESTS)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import websockets  # noqa: E402
from websockets.asyncio.client import ClientConnection  # noqa: E402
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

from rawws import StuckClient, hello  # noqa: E402

__all__ = ["BIG_INSTANCE", "ORDER", "ROOM", "AttackStats"]

#: The well-behaved clients' room.
ROOM = "soak-room"
#: The large instance the stuck clients open (seeded by the soak before the server starts).
BIG_INSTANCE = "soak-big"
ORDER = (
    "stuck",
    "error-flood",
    "binary",
    "bad-text",
    "rooms",
    "oversize",
    "slowloris",
    "deep",
    "fuzz",
)
MiB = 1024 * 1024


@dataclass
class AttackStats:
    """What one attack did, summed over its phases."""

    phases: int = 0
    seconds: float = 0.0
    #: WebSockets opened (upgraded), and raw TCP sockets (slowloris, stuck clients).
    websockets: int = 0
    sockets: int = 0
    frames: int = 0
    bytes: int = 0
    #: How each connection ended: close codes, HTTP statuses ("http 403"), "408", ...
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def connections(self) -> int:
        return self.websockets + self.sockets

    def to_json(self) -> dict[str, Any]:
        d = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}
        d["connections"] = self.connections
        return d


class Ctx:
    def __init__(self, port: int, seed: int, good_ids: tuple[str, ...], users: int = 64) -> None:
        self.port = port
        #: Users each attack spreads its connections over (dev authentication: the token is
        #: the user id, so an attacker has as many users as it likes).
        self.users = users
        self._turns: dict[str, itertools.count[int]] = {}
        self.url = f"ws://127.0.0.1:{port}"
        self.rng = random.Random(seed)
        self.seed = seed
        self.good_ids = good_ids
        self.cookie: int | None = None  # the newest cookie of ROOM seen
        self.ids = itertools.count()
        self.stats = {name: AttackStats() for name in ORDER}
        self.fuzzer: Any = None

    def identity(self, attack: str, per_user: int = 10) -> tuple[str, str]:
        """The next ``(token, client_id)`` of ``attack``: users in turn, each with at most
        ``per_user`` client ids (a client id stays with its first user)."""
        k = next(self._turns.setdefault(attack, itertools.count()))
        user = f"atk-{attack}-{self.seed}-{k % self.users}"
        return user, f"{user}-c{(k // self.users) % per_user}"


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


async def _open(ctx: Ctx, st: AttackStats, instance: str, **kwargs: Any) -> ClientConnection | None:
    try:
        ws = await ws_connect(
            f"{ctx.url}/sync/{instance}",
            max_size=None,
            ping_interval=None,
            open_timeout=20,
            close_timeout=3,
            **kwargs,
        )
    except websockets.InvalidStatus as exc:
        st.outcomes[f"http {exc.response.status_code}"] += 1
        return None
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        st.errors[type(exc).__name__] += 1
        return None
    st.websockets += 1
    return ws


async def _connected(ctx: Ctx, ws: ClientConnection, timeout: float = 30) -> dict[str, Any] | None:
    """Read until ``connected`` (and, for ROOM, the catch-up's cookie)."""
    with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                msg = json.loads(await ws.recv())
                if isinstance(msg, dict) and msg.get("type") == "connected":
                    return msg
    return None


async def _drain(ws: ClientConnection, ctx: Ctx | None = None) -> None:
    """Read (and forget) everything until the connection closes; note ROOM's cookie."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for text in ws:
            if ctx is not None and isinstance(text, str) and text.startswith('{"type":"poke"'):
                with contextlib.suppress(ValueError):
                    c = json.loads(text).get("cookie")
                    if isinstance(c, int):
                        ctx.cookie = max(ctx.cookie or 0, c)


def _ended(st: AttackStats, ws: ClientConnection) -> None:
    rcvd = ws.protocol.close_rcvd
    st.outcomes[str(rcvd.code) if rcvd is not None else "1006"] += 1


async def _closed(ws: ClientConnection, timeout: float = 15) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ws.wait_closed(), timeout)


# -- the attacks ---------------------------------------------------------------------------


async def stuck(ctx: Ctx, deadline: float, st: AttackStats, n: int = 30) -> None:
    clients: list[StuckClient] = []
    try:
        while _left(deadline) > 0:
            while len(clients) < n and _left(deadline) > 0:
                user, _ = ctx.identity("stuck")
                first = hello(client_id=f"{user}-s{next(ctx.ids)}", token=user)
                try:
                    c = await asyncio.to_thread(StuckClient, ctx.port, BIG_INSTANCE, first)
                except (OSError, ConnectionError) as exc:
                    st.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.5)
                    continue
                st.sockets += 1
                st.frames += 1
                clients.append(c)
            for c in list(clients):
                if c.closed_by_server():
                    st.outcomes["dropped by the server"] += 1
                    c.close()
                    clients.remove(c)
            await asyncio.sleep(min(0.5, max(0.0, _left(deadline))))
    finally:
        st.outcomes["still open at the phase's end"] += len(clients)
        for c in clients:
            c.close()


def _bad_push(first_id: int, n: int) -> str:
    muts = [{"id": first_id + i, "name": "noSuchMutator", "args": {}} for i in range(n)]
    return json.dumps({"type": "push", "mutations": muts})


async def error_flood(ctx: Ctx, deadline: float, st: AttackStats, conns: int = 2) -> None:
    async def flooder(i: int) -> None:
        user = f"atk-flood-{ctx.seed}-{i}"
        cid = f"{user}-c0"
        while _left(deadline) > 1:
            ws = await _open(ctx, st, ROOM)
            if ws is None:
                await asyncio.sleep(1)
                continue
            # A replay from 0: every error this client ever caused, in the catch-up.
            await ws.send(hello(client_id=cid, token=user, last_mutation_id=0))
            got = await _connected(ctx, ws)
            if got is None:
                _ended(st, ws)
                continue
            lmid = int(got["last_mutation_id"])
            drain = asyncio.create_task(_drain(ws))
            try:
                while _left(deadline) > 0:
                    frame = _bad_push(lmid + 1, 1000)
                    await ws.send(frame)
                    st.frames += 1
                    st.bytes += len(frame)
                    lmid += 1000
                    await asyncio.sleep(0)
                await ws.close()
            except websockets.ConnectionClosed:
                pass
            await _closed(ws)
            drain.cancel()
            _ended(st, ws)

    await asyncio.gather(*(flooder(i) for i in range(conns)))


async def binary(ctx: Ctx, deadline: float, st: AttackStats, loops: int = 2) -> None:
    await _bad_frames(ctx, deadline, st, loops, text=False)


async def bad_text(ctx: Ctx, deadline: float, st: AttackStats, loops: int = 2) -> None:
    await _bad_frames(ctx, deadline, st, loops, text=True)


async def _bad_frames(ctx: Ctx, deadline: float, st: AttackStats, loops: int, text: bool) -> None:
    async def loop(j: int) -> None:
        k = 0
        while _left(deadline) > 0:
            k += 1
            if k % 10 == 0:  # a page of another site (cross-site WebSocket hijacking)
                ws = await _open(ctx, st, ROOM, origin="https://evil.example")
                if ws is not None:
                    await ws.close()
                    st.outcomes["foreign origin accepted"] += 1
                continue
            if k % 10 == 5:  # an instance id with a newline
                ws = await _open(ctx, st, "abc%0A")
                if ws is not None:
                    with contextlib.suppress(websockets.ConnectionClosed):
                        user, cid = ctx.identity("newline")
                        await ws.send(hello(client_id=cid, token=user))
                    await _closed(ws)
                    _ended(st, ws)
                continue
            ws = await _open(ctx, st, ROOM)
            if ws is None:
                await asyncio.sleep(0.2)
                continue
            user, cid = ctx.identity("bad-text" if text else "binary")
            await ws.send(hello(client_id=cid, token=user, cookie=ctx.cookie))
            if await _connected(ctx, ws) is not None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    if not text:
                        await ws.send(b"\xff\xfe\x00binary")
                    else:  # a *text* frame whose bytes are not UTF-8
                        await ws.send(b'{"type":"pull","x":"\xff"}', text=True)
                    st.frames += 1
            await _drain(ws, ctx)
            _ended(st, ws)

    await asyncio.gather(*(loop(j) for j in range(loops)))


async def rooms(ctx: Ctx, deadline: float, st: AttackStats, loops: int = 2) -> None:
    created = st.extra.setdefault("rooms", 0)

    async def loop() -> None:
        nonlocal created
        while _left(deadline) > 0:
            room = f"flood-room-{ctx.seed}-{next(ctx.ids)}"
            ws = await _open(ctx, st, room)
            if ws is None:
                await asyncio.sleep(0.2)
                continue
            user, cid = ctx.identity("rooms")
            await ws.send(hello(client_id=cid, token=user))
            if await _connected(ctx, ws) is not None:
                created += 1
                push = {
                    "type": "push",
                    "mutations": [{"id": 1, "name": "setValue", "args": {"key": "x", "value": 1}}],
                }
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(json.dumps(push))
                    st.frames += 1
                    async with asyncio.timeout(30):
                        while True:
                            msg = json.loads(await ws.recv())
                            if msg.get("type") == "push_response":
                                break
                    await ws.close()
            await _closed(ws)
            _ended(st, ws)

    try:
        await asyncio.gather(*(loop() for _ in range(loops)))
    finally:
        st.extra["rooms"] = created


async def oversize(ctx: Ctx, deadline: float, st: AttackStats, loops: int = 2) -> None:
    big_text = "x" * (9 * MiB)
    letters = (string.ascii_letters * (9 * MiB // 52 + 1))[: 9 * MiB]

    async def loop(j: int) -> None:
        k = 0
        while _left(deadline) > 0:
            k += 1
            deflate = bool(k % 2)
            ws = await _open(ctx, st, ROOM, compression="deflate" if deflate else None)
            if ws is None:
                await asyncio.sleep(0.2)
                continue
            user, cid = ctx.identity("oversize")
            await ws.send(hello(client_id=cid, token=user, cookie=ctx.cookie))
            drain: asyncio.Task[None] | None = None
            if await _connected(ctx, ws) is not None:
                drain = asyncio.create_task(_drain(ws, ctx))
                body = big_text if deflate else letters
                frame = '{"type":"push","mutations":[{"id":1,"name":"setBlob",'
                frame += '"args":{"key":"b","data":"'
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.send(frame + body + '"}}]}')
                    st.frames += 1
                    st.bytes += len(body)
            await _closed(ws)
            if drain is not None:
                drain.cancel()
            _ended(st, ws)

    await asyncio.gather(*(loop(j) for j in range(loops)))


async def slowloris(ctx: Ctx, deadline: float, st: AttackStats, n: int = 200) -> None:
    async def one() -> None:
        while _left(deadline) > 0:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", ctx.port)
            except OSError as exc:
                st.errors[type(exc).__name__] += 1
                await asyncio.sleep(1)
                continue
            st.sockets += 1
            outcome = "still open at the phase's end"
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while _left(deadline) > 0:
                    writer.write(b"X")
                    await writer.drain()
                    try:
                        data = await asyncio.wait_for(reader.read(200), 0.25)
                    except TimeoutError:
                        continue
                    outcome = (
                        data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
                    )
                    break
            except OSError:
                outcome = "reset"
            finally:
                st.outcomes[outcome] += 1
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(n)))


def _deep_push(first_id: int, depth: int) -> str:
    data = "[" * depth + "0" + "]" * depth
    return (
        '{"type":"push","mutations":[{"id":'
        + str(first_id)
        + ',"name":"setBlob","args":{"key":"deep","data":'
        + data
        + "}}]}"
    )


async def deep(ctx: Ctx, deadline: float, st: AttackStats, loops: int = 2) -> None:
    async def loop(j: int) -> None:
        user = f"atk-deep-{ctx.seed}-{j}"
        cid = f"{user}-c0"
        while _left(deadline) > 0:
            ws = await _open(ctx, st, ROOM)
            if ws is None:
                await asyncio.sleep(0.5)
                continue
            await ws.send(hello(client_id=cid, token=user, cookie=ctx.cookie))
            got = await _connected(ctx, ws)
            if got is None:
                _ended(st, ws)
                continue
            lmid = int(got["last_mutation_id"])
            drain = asyncio.create_task(_drain(ws, ctx))
            with contextlib.suppress(websockets.ConnectionClosed):
                for i in range(200):
                    if _left(deadline) <= 0:
                        break
                    # args = {"key", "data"}: data nested 32 is args nested 33 (refused as a
                    # mutation); 198 is still under the parser's limit with the envelope.
                    depth = 32 if i % 2 else 196
                    await ws.send(_deep_push(lmid + 1, depth))
                    lmid += 1
                    st.frames += 1
                    await asyncio.sleep(0.01)
                await ws.send(_deep_push(lmid + 1, 250))  # the whole frame is refused
                st.frames += 1
            await _closed(ws)
            drain.cancel()
            _ended(st, ws)

    await asyncio.gather(*(loop(j) for j in range(loops)))


async def fuzz(ctx: Ctx, deadline: float, st: AttackStats) -> None:
    from benchmarks.fuzz_frames import Fuzzer, ScriptSource

    if ctx.fuzzer is None:  # one fuzzer for every phase: its workers remember who owns
        # which client id (the server does too)
        source = ScriptSource(ctx.seed, frozenset())
        ctx.fuzzer = Fuzzer(ctx.url, source, workers=2, good_ids=ctx.good_ids, shared=ROOM)
    fz = ctx.fuzzer
    fz.stop.clear()
    stats = await fz.run(until=time.monotonic() + max(0.0, _left(deadline)))
    # The fuzzer's counts are cumulative over its phases, as an attack's are.
    st.websockets = stats.connections
    st.frames = stats.frames
    st.bytes = stats.bytes_sent
    st.outcomes = Counter({str(code): n for code, n in stats.close_codes.items()})
    for code, n in stats.http_refusals.items():
        st.outcomes[f"http {code}"] = n
    st.extra["mismatches"] = stats.mismatches
    st.extra["crashes"] = len(stats.crashes)
    st.extra["rate_limited"] = sum(stats.rate_limited.values())
    st.extra["mismatch_samples"] = stats.mismatch_samples[:10]


ATTACKS = {
    "stuck": stuck,
    "error-flood": error_flood,
    "binary": binary,
    "bad-text": bad_text,
    "rooms": rooms,
    "oversize": oversize,
    "slowloris": slowloris,
    "deep": deep,
    "fuzz": fuzz,
}


async def rotate(
    ctx: Ctx, seconds: float, phase_seconds: float, order: tuple[str, ...] = ORDER
) -> list[dict[str, Any]]:
    """Run the attacks of ``order`` in turn, ``phase_seconds`` each, for ``seconds``."""
    schedule: list[dict[str, Any]] = []
    end = time.monotonic() + seconds
    for name in itertools.cycle(order):
        left = end - time.monotonic()
        if left <= 1:
            break
        deadline = time.monotonic() + min(phase_seconds, left)
        st = ctx.stats[name]
        t0, w0 = time.monotonic(), time.time()
        try:
            # An attack's cleanup (closing handshakes) may outlast its deadline a little.
            async with asyncio.timeout(min(phase_seconds, left) + 30):
                await ATTACKS[name](ctx, deadline, st)
        except Exception as exc:  # an attack that broke: counted, and the rotation goes on
            st.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
        st.phases += 1
        st.seconds += time.monotonic() - t0
        schedule.append({"attack": name, "start": w0, "end": time.time()})
        print(f"[attacker] {name} done: {st.connections} connections so far", flush=True)
    return schedule


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.attacks")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--phase-seconds", type=float, default=40.0)
    p.add_argument("--out", required=True)
    p.add_argument("--good-ids", default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("--users", type=int, default=64, help="users per attack (default 64)")
    p.add_argument("--only", default="", help="comma list of attacks (default: all, in turn)")
    args = p.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    order = tuple(a for a in args.only.split(",") if a) or ORDER
    ctx = Ctx(args.port, args.seed, tuple(x for x in args.good_ids.split(",") if x), args.users)
    schedule = asyncio.run(rotate(ctx, args.seconds, args.phase_seconds, order))
    out = {
        "schedule": schedule,
        "attacks": {k: v.to_json() for k, v in ctx.stats.items() if v.phases},
        "nice": args.nice,
        "users_per_attack": args.users,
    }
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
