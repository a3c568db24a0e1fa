"""Soak: two well-behaved clients keep syncing while the server is attacked for ``--minutes``,
next to a quiet run of the same two clients for ``--quiet-minutes`` in the same sitting.

    .venv/bin/python -m benchmarks.soak --minutes 10 --write-doc        # 10 quiet + 10 hostile
    .venv/bin/python -m benchmarks.soak --minutes 1 --phase-seconds 8   # a short try

Each run starts a fresh server process the way ``synced-store serve`` runs it
(benchmarks/live_server.py, default ``ServerLimits`` and ``Retention``) on 127.0.0.1, with a
large instance (3,600 rows of 10 KB, 36 MB) already in its data directory. In the room
``soak-room`` one client writes a counter ``--rate`` times a second on a fixed schedule and
another observes the table through ``subscribe_to_table``: a write's latency is from the
writer's ``mutate`` call to the observer's callback that first shows it (as
benchmarks/e2e.py measures write → visible). Both clients record every disconnect.

The hostile run adds an attacker process (benchmarks/attacks.py, ``nice`` 10) that rotates
through the attacks of issue 9 — clients that never read on the large instance, error floods
and replays from 0, binary and non-UTF-8 frames, a flood of new rooms, 9 MiB frames,
slowloris, deep values, the frame fuzzer — ``--phase-seconds`` each. The machine is a shared
2-core box and the attacker runs on it too, so absolute times say little: the headline is the
ratio hostile / quiet. Peak RSS is the server's ``VmHWM``; fds are sampled every 0.5 s.

``--write-doc`` writes the "soak" section of docs/benchmarks.md and the headline figures into
docs/security.md ("Fuzzing and soak"); the raw numbers go to
benchmarks/results/soak-last-run.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from benchmarks.attacks import BIG_INSTANCE, ORDER, ROOM  # noqa: E402
from benchmarks.common import latency_stats, loadavg, percentile  # noqa: E402
from benchmarks.fuzz_frames import BACKEND, SECURITY_DOC, FuzzStats, Monitor, log_findings  # noqa: E402
from benchmarks.live_server import code_version, start_server  # noqa: E402
from benchmarks.sections import DOC, run_facts, write_section  # noqa: E402
from benchmarks.wellbehaved import LatencyPair, verify  # noqa: E402
from synced_store.storage.sqlite import SqliteInstanceStore, instance_path  # noqa: E402
from synced_store.types import RowKey  # noqa: E402

__all__ = ["run_soak"]

RAW = ROOT / "benchmarks" / "results" / "soak-last-run.json"
BIG_ROWS, BIG_TEXT = 3_600, 10_000


async def seed_big_instance(data_dir: Path) -> int:
    """The large instance, written straight into its database file (as
    tests/server/test_memory_bounds.py does); returns its payload size in bytes."""
    store = SqliteInstanceStore(instance_path(data_dir, BIG_INSTANCE))
    tx = await store.begin()
    for i in range(BIG_ROWS):
        value = {"id": f"i{i:05}", "text": f"{i:05}" + "x" * BIG_TEXT}
        await tx.write(RowKey("", "items", f"i{i:05}"), f"{i:08}", orjson.dumps(value), 1)
    await tx.set_schema_version(1)
    await tx.commit(1)
    await store.close()
    return BIG_ROWS * BIG_TEXT


def _say(msg: str) -> None:
    print(time.strftime("[%H:%M:%S] ") + msg, flush=True)


async def run_phase(
    kind: str, seconds: float, *, rate: float, phase_seconds: float, seed: int, base: Path
) -> dict[str, Any]:
    """One run (``kind`` is ``quiet`` or ``hostile``) on a fresh server."""
    data = base / kind / "data"
    data.mkdir(parents=True)
    await seed_big_instance(data)
    log_path = base / kind / "server.log"
    server = start_server("serve", BACKEND, data, log_path)
    stats = FuzzStats()
    monitor = Monitor(server, stats)
    mon = asyncio.create_task(monitor.run())
    pair = LatencyPair(ROOM, rate)
    await pair.start(server.url)
    stop = asyncio.Event()
    writer = asyncio.create_task(pair.run(stop))
    attacker: asyncio.subprocess.Process | None = None
    attack_out = base / kind / "attacks.json"
    if kind == "hostile":
        w, o = pair.writer.store, pair.observer.store
        assert w is not None
        assert o is not None
        good = f"{w.client_id},{o.client_id}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        with open(base / kind / "attacker.log", "wb") as alog:  # noqa: ASYNC230
            attacker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.attacks",
                "--port",
                str(server.port),
                "--seconds",
                str(seconds),
                "--phase-seconds",
                str(phase_seconds),
                "--out",
                str(attack_out),
                "--good-ids",
                good,
                "--seed",
                str(seed),
                cwd=ROOT,
                env=env,
                stdout=alog,
                stderr=asyncio.subprocess.STDOUT,
            )
    t0 = time.monotonic()
    started = time.time()
    while (left := seconds - (time.monotonic() - t0)) > 0:
        await asyncio.sleep(min(30.0, left))
        seen = sorted(s.latency_ms for s in pair.samples if s.latency_ms is not None)
        _say(
            f"  {kind}: {time.monotonic() - t0:5.0f}/{seconds:.0f} s, {len(pair.samples):,} "
            f"writes, p99 {percentile(seen, 99):.1f} ms, max {seen[-1] if seen else 0:.1f} ms, "
            f"server rss {monitor.max_rss >> 20} MiB, fds {monitor.max_fds}"
        )
    stop.set()
    await writer
    ended = time.time()
    await pair.settle(10)
    attacks: dict[str, Any] = {}
    if attacker is not None:
        try:
            await asyncio.wait_for(attacker.wait(), 180)
        except TimeoutError:
            attacker.kill()
            await attacker.wait()
        if attack_out.exists():
            attacks = json.loads(attack_out.read_text())
    peak = monitor.peak_rss()
    monitor.stop.set()
    await mon
    confirmed = {
        ("counters", f"~good-lat-{s.i:07d}"): {"value": s.i}
        for s in pair.samples
        if s.confirmed_ms is not None
    }
    missing = await verify(server.url, ROOM, confirmed)
    disconnects = {
        "writer": [d.__dict__ for d in pair.writer.disconnects],
        "observer": [d.__dict__ for d in pair.observer.disconnects],
    }
    ended_reason = {"writer": pair.writer.ended, "observer": pair.observer.ended}
    await pair.close()
    result = {
        "kind": kind,
        "seconds": seconds,
        "started": started,
        "ended": ended,
        "rate": rate,
        "writes": len(pair.samples),
        "visible": sum(s.latency_ms is not None for s in pair.samples),
        "confirmed": len(confirmed),
        "latency_ms": latency_stats(
            [s.latency_ms for s in pair.samples if s.latency_ms is not None]
        ).to_json(),
        "confirm_ms": latency_stats(
            [s.confirmed_ms for s in pair.samples if s.confirmed_ms is not None]
        ).to_json(),
        "schedule_lag_ms": latency_stats(pair.schedule_lag_ms).to_json(),
        "late_writes": len(pair.schedule_lag_ms),
        "missing_on_server": len(missing),
        "disconnects": disconnects,
        "ended_reason": ended_reason,
        "server": {
            "peak_rss_mib": round(peak / 2**20, 1),
            "max_open_fds": monitor.max_fds,
            "rss_at_end_mib": round(server.rss() / 2**20, 1),
            "open_fds_at_end": server.open_fds(),
            "health_checks": monitor.health_checks,
            "slowest_health_ms": round(monitor.slowest_health_ms, 1),
            "crashes": stats.crashes,
        },
        "attacks": attacks,
        "per_attack": _per_attack(pair, monitor, attacks.get("schedule", [])),
    }
    server.stop()
    result["server_log"] = log_findings(log_path)
    return result


def _per_attack(
    pair: LatencyPair, monitor: Monitor, schedule: list[dict[str, Any]]
) -> dict[str, Any]:
    """Latency of the writes sent, and the server's RSS and fds, while each attack ran."""
    out: dict[str, Any] = {}
    for name in ORDER:
        spans = [(p["start"], p["end"]) for p in schedule if p["attack"] == name]
        if not spans:
            continue

        def inside(t: float, spans: list[tuple[float, float]] = spans) -> bool:
            return any(a <= t < b for a, b in spans)

        lat = [s.latency_ms for s in pair.samples if s.latency_ms is not None and inside(s.sent)]
        unseen = sum(1 for s in pair.samples if s.latency_ms is None and inside(s.sent))
        res = [(r, f) for t, r, f in monitor.samples if inside(t)]
        out[name] = {
            "latency_ms": latency_stats(lat).to_json(),
            "never_visible": unseen,
            "max_rss_mib": round(max((r for r, _ in res), default=0) / 2**20, 1),
            "max_fds": max((f for _, f in res), default=0),
        }
    return out


async def run_soak(
    minutes: float, quiet_minutes: float, *, rate: float, phase_seconds: float, seed: int
) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="synced-store-soak-"))
    out: dict[str, Any] = {
        "minutes": minutes,
        "quiet_minutes": quiet_minutes,
        "rate": rate,
        "phase_seconds": phase_seconds,
        "seed": seed,
        "code": code_version(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "loadavg_start": loadavg(),
    }
    try:
        _say(f"quiet run: {quiet_minutes:g} min, {rate:g} writes/s")
        out["quiet"] = await run_phase(
            "quiet",
            quiet_minutes * 60,
            rate=rate,
            phase_seconds=phase_seconds,
            seed=seed,
            base=base,
        )
        _say(f"hostile run: {minutes:g} min, attacks rotating every {phase_seconds:g} s")
        out["hostile"] = await run_phase(
            "hostile", minutes * 60, rate=rate, phase_seconds=phase_seconds, seed=seed, base=base
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out["loadavg_end"] = loadavg()
    return out


# -- output --------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "—"
    return f"{a / b:.2f}×"


def _disconnects(r: dict[str, Any]) -> str:
    ds = r["disconnects"]["writer"] + r["disconnects"]["observer"]
    if not ds:
        return "0"
    return f"{len(ds)} (" + ", ".join(f"{d['code']} {d['reason']}"[:40] for d in ds[:3]) + ")"


def _hostile_connections(r: dict[str, Any]) -> int:
    return sum(a["connections"] for a in r.get("attacks", {}).get("attacks", {}).values())


def comparison_rows(s: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    q, h = s["quiet"], s["hostile"]
    rows: list[tuple[str, str, str, str]] = []
    for p in ("p50", "p99", "max"):
        a, b = q["latency_ms"][p], h["latency_ms"][p]
        rows.append((f"write → visible {p} (ms)", _ms(a), _ms(b), _ratio(b, a)))
    a, b = q["confirm_ms"]["p99"], h["confirm_ms"]["p99"]
    rows.append(("write → confirmed p99 (ms)", _ms(a), _ms(b), _ratio(b, a)))
    rows.append(
        (
            "writes (visible / sent)",
            f"{q['visible']:,} / {q['writes']:,}",
            f"{h['visible']:,} / {h['writes']:,}",
            "",
        )
    )
    rows.append(
        (
            "confirmed writes missing on the server",
            str(q["missing_on_server"]),
            str(h["missing_on_server"]),
            "",
        )
    )
    a, b = q["server"]["peak_rss_mib"], h["server"]["peak_rss_mib"]
    rows.append(("server peak RSS (MiB)", f"{a:.0f}", f"{b:.0f}", _ratio(b, a)))
    a, b = q["server"]["max_open_fds"], h["server"]["max_open_fds"]
    rows.append(("server max open fds", str(a), str(b), _ratio(b, a)))
    rows.append(("hostile connections opened", "0", f"{_hostile_connections(h):,}", ""))
    rows.append(("well-behaved disconnects", _disconnects(q), _disconnects(h), ""))
    rows.append(
        (
            "server crashes (exit, 1011, /healthz)",
            str(len(q["server"]["crashes"])),
            str(len(h["server"]["crashes"])),
            "",
        )
    )
    return rows


def attack_rows(s: dict[str, Any]) -> list[tuple[str, ...]]:
    h = s["hostile"]
    attacks = h.get("attacks", {}).get("attacks", {})
    rows = []
    for name in ORDER:
        if name not in attacks:
            continue
        a = attacks[name]
        pa = h["per_attack"].get(name, {})
        outcomes = ", ".join(
            f"{k}: {v:,}" for k, v in sorted(a["outcomes"].items(), key=lambda x: -x[1])[:5]
        )
        lat = pa.get("latency_ms", {})
        rows.append(
            (
                name,
                f"{a['phases']}",
                f"{a['connections']:,}",
                outcomes or "—",
                _ms(lat.get("p50")),
                _ms(lat.get("p99")),
                _ms(lat.get("max")),
                f"{pa.get('max_rss_mib', 0):.0f}",
                f"{pa.get('max_fds', 0)}",
            )
        )
    return rows


ATTACK_HEAD = (
    "attack",
    "phases",
    "connections",
    "how they ended (top 5)",
    "p50 ms",
    "p99 ms",
    "max ms",
    "RSS MiB",
    "fds",
)


def print_tables(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=170)
    t = Table(title=f"soak: {s['minutes']:g} min hostile vs {s['quiet_minutes']:g} min quiet")
    for c in ("measure", "quiet", "hostile", "hostile / quiet"):
        t.add_column(c)
    for row in comparison_rows(s):
        t.add_row(*row)
    con.print(t)
    t = Table(title="hostile run, by attack (latency of the writes sent during it)")
    for c in ATTACK_HEAD:
        t.add_column(c)
    for row in attack_rows(s):
        t.add_row(*row)
    con.print(t)
    for kind in ("quiet", "hostile"):
        log = s[kind]["server_log"]
        if log["errors"]:
            con.print(f"{kind} server log ({log['lines']} lines, {log['tracebacks']} tracebacks):")
            for line, n in list(log["errors"].items())[:10]:
                con.print(f"  {n:6,} × {line}")
    fz = s["hostile"].get("attacks", {}).get("attacks", {}).get("fuzz", {}).get("extra", {})
    if fz.get("mismatches"):
        con.print(
            f"fuzz mismatches during the soak: {fz['mismatches']}: {fz['mismatch_samples'][:3]}"
        )


def _md_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join([":--"] + ["--:"] * (len(head) - 1)) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def doc_section(s: dict[str, Any], command: str) -> str:
    q, h = s["quiet"], s["hostile"]
    ratio = _ratio(h["latency_ms"]["p99"], q["latency_ms"]["p99"])
    logs = h["server_log"]
    users = h.get("attacks", {}).get("users_per_attack", "several")
    log_lines = "\n".join(
        f"  - {n:,} × `{line[:110]}`" for line, n in list(logs["errors"].items())[:6]
    )
    return f"""## Soak: syncing while the server is attacked (issue 9)

{s.get("measured") or run_facts(command)} Server code at {s.get("code", "unknown")}.

Two well-behaved clients in one room — one writes a counter {s["rate"]:g} times a second on a
fixed schedule, the other observes the table through `subscribe_to_table` — against a fresh
server process run the way `synced-store serve` runs it (default `ServerLimits` and
`Retention`), once quiet for {s["quiet_minutes"]:g} min and once for {s["minutes"]:g} min
while an attacker process (`benchmarks/attacks.py`, `nice` 10, on the same machine) rotates
through the attacks of issue 9, {s["phase_seconds"]:.0f} s each. Latency is from the writer's
`mutate` call to the observer's callback that first shows the row. The box is a shared
2-core machine (load average {s["loadavg_start"][0]:.2f} at the start, {s["loadavg_end"][0]:.2f}
at the end) and the attacker competes for the same two cores, so the absolute times are
pessimistic; the ratio is the headline: **p99 write → visible {ratio} of the quiet run**.

{_md_table(("measure", "quiet", "hostile", "hostile / quiet"), comparison_rows(s))}

By attack (the latency of the writes sent while it ran; RSS and fds at their highest then):

{_md_table(ATTACK_HEAD, attack_rows(s))}

* `stuck`: 30 sockets at a time that send `connect` to a 36 MB instance and never read;
  `error-flood`: two connections pushing 1,000 unknown-mutator calls per frame in the same
  room, reconnecting with `last_mutation_id: 0`; `binary`: a binary non-UTF-8 frame after
  `connect` (4003), with a foreign `Origin` (HTTP 403) and `abc%0A` (4004) in between;
  `bad-text`: the same with a non-UTF-8 *text* frame (1007, refused by the WebSocket
  layer); `rooms`: one new instance per connection; `oversize`: 9 MiB frames,
  deflated or not (1009); `slowloris`: 200 unfinished HTTP heads, one byte every 0.25 s
  (408 after 10 s); `deep`: values nested 33 and 197 deep (permanent mutation errors) and a
  250-deep frame (4003); `fuzz`: the frame fuzzer, its shared instance being the room.
* Each attack spreads its connections over {users} users (with development authentication
  the token is the user id, so an attacker has as many as it likes). The per-user limits
  still refuse part of it with 1008 (5 new connections a second and a burst of 30 per
  user; frame and mutation rates): cheap refusals, before any instance work.
* A 1006 of `error-flood` is the server's own hard drop (no closing handshake, by design) of
  a flooding connection that did not read its replies in time: the attacker is `nice`d.
* RSS and fds peak with `rooms`, which fills the cap of 1,000 open instances (about 4 fds
  each); idle instances close after 60 s. `stuck` and `slowloris` sockets "still open at
  the phase's end" were opened less than the send timeout (30 s) or the header timeout
  (10 s) before it.
* The server's log in the hostile run: {logs["lines"]:,} lines, {logs["tracebacks"]:,}
  tracebacks; its distinct error lines:
{log_lines or "  - none"}
"""


_HEADLINE = (
    "write → visible p50",
    "write → visible p99",
    "write → visible max",
    "server peak",
    "server max",
    "hostile conn",
    "well-behaved",
    "confirmed writes",
    "server crashes",
)


def security_section(s: dict[str, Any], command: str) -> str:
    h = s["hostile"]
    rows = "\n".join(
        f"| {a} | {b} | {c} | {d} |" for a, b, c, d in comparison_rows(s) if a.startswith(_HEADLINE)
    )
    tb = h["server_log"]["tracebacks"]
    tracebacks = (
        f" The server logged {tb:,} tracebacks during the attacks (see above)." if tb else ""
    )
    return f"""### Soak

{s.get("measured") or run_facts(command)} Server code at {s.get("code", "unknown")}. Tables by
attack: docs/benchmarks.md, "Soak".

| measure | quiet | hostile | hostile / quiet |
| :-- | --: | --: | --: |
{rows}

The hostile run rotated {", ".join(ORDER)} ({s["phase_seconds"]:.0f} s each) for
{s["minutes"]:g} min against a server with its default limits; the quiet run is the same
two clients alone for {s["quiet_minutes"]:g} min just before it, on a fresh server.{tracebacks}
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="hostile run (default 10)")
    p.add_argument(
        "--quiet-minutes", type=float, default=None, help="quiet run (default: --minutes)"
    )
    p.add_argument("--rate", type=float, default=20.0, help="writes per second (default 20)")
    p.add_argument(
        "--phase-seconds",
        type=float,
        default=None,
        help="seconds per attack (default: each attack runs twice, at least 20 s)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--write-doc", action="store_true")
    p.add_argument("--json", default=str(RAW))
    p.add_argument("--report-only", metavar="JSON", help="re-render the docs from a saved run")
    args = p.parse_args(argv)
    quiet = args.minutes if args.quiet_minutes is None else args.quiet_minutes
    phase = args.phase_seconds or max(20.0, args.minutes * 60 / (2 * len(ORDER)))
    if args.report_only:
        s = json.loads(Path(args.report_only).read_text())
    else:
        s = asyncio.run(
            run_soak(
                args.minutes,
                quiet,
                rate=args.rate,
                phase_seconds=phase,
                seed=args.seed,
            )
        )
        s["command"] = "python -m benchmarks.soak " + " ".join(argv or sys.argv[1:])
        s["measured"] = run_facts(s["command"])
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(s, indent=1, default=str))
    print_tables(s)
    if args.write_doc:
        write_section("soak", doc_section(s, s["command"]), DOC)
        write_section("soak", security_section(s, s["command"]), SECURITY_DOC)
        print(f"wrote the soak sections of {DOC} and {SECURITY_DOC}")
    h = s["hostile"]
    bad = h["server"]["crashes"] or h["missing_on_server"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
