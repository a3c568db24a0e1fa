"""The sections of docs/benchmarks.md: tables from the run, and the method notes around them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Fmt = Callable[..., str]


def client_section(
    data: dict[str, Any],
    rows: list[dict[str, Any]],
    table: Callable[..., list[str]],
    f: Fmt,
    ratio: Fmt,
) -> list[str]:
    reps = data.get("replicache_runs", [])
    L = ["## Client-side: our engine vs Replicache (peers/replicache/WORKLOAD.md)", ""]
    L += [
        f"Median over {len(data['client_runs'])} run(s) of ours and {len(reps)} run(s) of "
        "Replicache 15.3 (`node --expose-gc bench.mjs --json …`, its own stock command), "
        "interleaved ours → Replicache → ours → … in this sitting. Times in ms. The rate "
        "column is closed-loop ops/s for latency rows and MiB/s at p50 for d and e. Ratios are "
        "ours ÷ Replicache: below 1 is better for times, above 1 is better for MiB/s.",
        "",
    ]
    hdr = [
        "workload",
        "n",
        "p50",
        "p95",
        "p99",
        "rate",
        "Replicache p50",
        "Replicache p95",
        "Replicache rate",
        "ratio p50",
        "ratio p95",
        "ratio rate",
        "our p50 per run",
    ]
    out = []
    for r in rows:
        out.append(
            [
                r["name"],
                f"{r['n']:,}",
                f(r["p50"]),
                f(r["p95"]),
                f(r["p99"]),
                f(r["rate"], 1) + (" MiB/s" if r["throughput"] else " ops/s"),
                f(r.get("rep_p50")),
                f(r.get("rep_p95")),
                f(r.get("rep_rate"), 1) if r.get("rep_rate") is not None else "—",
                ratio(r["p50"], r.get("rep_p50")),
                ratio(r["p95"], r.get("rep_p95")),
                ratio(r["rate"], r.get("rep_rate")),
                " / ".join(f(x) for x in r["p50_runs"]),
            ]
        )
    L += table(hdr, out, "l" + "r" * 11 + "l")
    pend = {r["id"]: r.get("pending") for r in rows}
    L += [
        "",
        "### How our client runs the workload, and the differences",
        "",
        "- **Client**: `synced_store.core.client_engine.ClientEngine`, the sans-I/O engine inside "
        "every `SyncedStoreClient`, never connected: no server, no network, no push. The "
        "mutators `set_one`, `set_many` and `populate` are declared with `define_schema` / "
        "`define_backend_config` (`benchmarks/client_side.py`). The table is "
        "`table(Value)` with a **pydantic model** of the six `make_value` fields, and the "
        "mutator inputs are pydantic models too, so every call validates its input and every "
        "`set` validates the row, as in a real app.",
        "- **Pending mutations pile up**: nothing is ever confirmed, so each instance keeps every "
        "mutation (with its arguments, read set and written rows) for its whole life "
        f"(at the end: {pend.get('a1/cb', '—')} pending in a1, {pend.get('b', '—')} in b). "
        "Nothing is dropped or compacted.",
        "- **Store**: in memory (a dict per table plus a sorted key list). A commit is visible to "
        "later reads when `mutate()` returns; it is not durable (the optional persistence is a "
        "SQLite file written by the asyncio client, not used here). Replicache also runs with "
        "its in-memory store.",
        "- **Callbacks are synchronous**: the engine re-runs the affected subscriptions and "
        "calls their callbacks inside `mutate()`, so t_cb ≤ t_res, as with Replicache. The "
        "workload's between-iteration yield is an `await asyncio.sleep(0)`; the engine has no "
        "background work to run in it.",
        "- **Closed-loop ops/s** (the rate of latency rows) counts the wall time between "
        "timed windows too, and there our runner builds each new value with the pure-Python "
        "`make_value` (a 10 KB value takes milliseconds), so our a1-a5 rates mostly measure "
        "that generator, not the client; compare the p50/p95 columns.",
        "- **Values are stored as Python objects** (dicts); reads return deep copies "
        "(`copy_on_read`), which is part of the measured cost of c, d and every subscription.",
        "- **a5 scans**: our `scan()` has a `cursor` that starts *after* a key, not an inclusive "
        "start key. Subscription i > 0 uses `cursor = EntryKey('', 's/' + zero_pad(128i − 1, 5))`,"
        " which returns the same 16 rows, because no key sorts between `s/{128i−1}` and "
        "`s/{128i}`; its read range starts at the cursor key, so it is also invalidated by a write "
        "to `s/{128i−1}` (the workload never writes one).",
        "- **Loading** (untimed) uses `set_many` in mutations of at most 4,096 entries, as "
        "specified. Our loading is slow (for a4, 64 MiB of 1 KB values take tens of seconds, "
        "mostly pydantic validation), which is why a full run takes a while; it is outside "
        "every timed window.",
        "",
    ]
    return L


def capacity_section(
    data: dict[str, Any], table: Callable[..., list[str]], f: Fmt, ratio: Fmt
) -> list[str]:
    cap = data["capacity"]
    inst, a, b = cap["instance"], cap["raw_a"], cap["raw_b"]
    L = ["## Mutations/s per instance next to raw sqlite3 (same run, same minute)", ""]
    rows = [
        [
            "instance writer alone: real `Instance` + 10 `Session`s, in-process, no network",
            f"{inst['mutations']:,}",
            f(inst["mutations_per_s"]),
            f(inst["mutations_per_commit"], 1),
            ratio(inst["mutations_per_s"], a["rows_per_s"]),
            ratio(inst["mutations_per_s"], b["rows_per_s"]),
        ],
    ]
    for e in data["e2e_runs"]:
        for tp in e["throughput"]:
            rows.append(
                [
                    f"end-to-end, 10 WebSocket clients, {tp['subscription']} (section (c) below)",
                    f"{tp['confirmed_in_window']:,}",
                    f(tp["confirmed_per_s"]),
                    f(tp["mutations_per_commit"], 1),
                    ratio(tp["confirmed_per_s"], a["rows_per_s"]),
                    ratio(tp["confirmed_per_s"], b["rows_per_s"]),
                ]
            )
    rows.append(
        [
            "raw sqlite3 A: one transaction per row write",
            f"{a['rows']:,}",
            f(a["rows_per_s"]),
            "1",
            "1.00×",
            ratio(a["rows_per_s"], b["rows_per_s"]),
        ]
    )
    rows.append(
        [
            f"raw sqlite3 B: one transaction per {b['batch']} rows (our mean batch)",
            f"{b['rows']:,}",
            f(b["rows_per_s"]),
            str(b["batch"]),
            ratio(b["rows_per_s"], a["rows_per_s"]),
            "1.00×",
        ]
    )
    L += table(["what", "mutations (rows)", "per s", "per commit", "÷ raw A", "÷ raw B"], rows)
    L += [
        "",
        "Each mutation is `insert_msg`: one ≈120-byte row (`benchmarks/app.py`). The instance "
        "writer runs the full server path per mutation: lastMutationID check, pydantic input "
        "validation, the mutator, value validation and JSON encoding, a savepoint, the row "
        "upsert, the client's `last_mutation_id` row, and after each commit the fan-out "
        "to every session (their sockets discard the frames). It is fed 10 clients' pushes of "
        "100 mutations, all queued at once, so it commits in batches of up to 2,000. The raw "
        "baselines upsert the same rows into the same `rows` table (same indexes, WAL, "
        "`synchronous=NORMAL`), with the JSON encoded beforehand, so they measure SQLite only.",
        "",
    ]
    return L


def e2e_section(
    data: dict[str, Any],
    table: Callable[..., list[str]],
    f: Fmt,
    ratio: Fmt,
    tri_lat: Callable[..., Any],
    tri_tp: Callable[..., Any],
) -> list[str]:
    L = ["## End-to-end: our server + clients vs Triplit (peers/triplit/WORKLOAD.md)", ""]
    L += [
        "Server: `python -m benchmarks.server --port P --data-dir D` (uvicorn on 127.0.0.1, "
        "`synced_store.server.create_app`, SQLite WAL `synchronous=NORMAL`), a separate process "
        "with a fresh data directory per phase, stopped by PID (SIGTERM). Clients: "
        "`synced_store.client.connect` clients, all in the load-generator process, each with its "
        "own WebSocket, in-memory store and subscription. A room is an instance (one SQLite file);"
        " the subscription is `ctx.table('msgs').entries()` on it. Authentication: a token is "
        "its own user id and every row is public — the cheapest rule set. Server CPU seconds "
        "come from `/proc/<pid>/stat`. Triplit ran its own `bench.mjs` with its default "
        "options in the same sitting, right after ours.",
        "",
    ]
    tri = data.get("triplit_runs") or []
    for k, e in enumerate(data["e2e_runs"]):
        t = tri[k] if k < len(tri) else None
        L += [f"### (b) Write → visible on another client (run {k + 1}), ms", ""]
        rows = []
        for r in e["latency"]:
            o, a = r["write_to_observer_ms"], r["write_to_all_others_ms"]
            td = tri_lat(t, r["N"], "default") if t else None
            te = tri_lat(t, r["N"], "eager") if t else None
            rows.append(
                [
                    str(r["N"]),
                    f"{r['samples']}",
                    str(r["timeouts"]),
                    f(o["p50"]),
                    f(o["p95"]),
                    f(o["p99"]),
                    f(a["p50"]),
                    f(a["p99"]),
                    f(r["connect_all_ms"], 0),
                    f(r["server_cpu_s"], 2),
                    f(td["writeToObserverMs"]["p50"]) if td else "—",
                    f(td["writeToObserverMs"]["p99"]) if td else "—",
                    f(te["writeToObserverMs"]["p50"]) if te else "—",
                    ratio(o["p50"], td["writeToObserverMs"]["p50"]) if td else "—",
                    ratio(o["p50"], te["writeToObserverMs"]["p50"]) if te else "—",
                ]
            )
        L += table(
            [
                "N",
                "samples",
                "timeouts",
                "p50",
                "p95",
                "p99",
                "all p50",
                "all p99",
                "connect N (ms)",
                "server CPU s",
                "Triplit p50",
                "Triplit p99",
                "Triplit eager p50",
                "ratio p50",
                "ratio p50 vs eager",
            ],
            rows,
        )
        L += [
            "",
            "Our client pushes each mutation at once (there is no push throttle), so there is "
            "only the `default` row; Triplit's `eager` row (`syncWrites()` after each write) is "
            'shown for reference. The observer is client 1; "all" is the last of the N−1 '
            "others. Writes are strictly sequential and the room grows by one row per sample. "
            "Every subscription re-runs its full-table query on each change, so the cost per "
            "write grows with the room size, like Triplit's.",
            "",
            "### (c) Sustained confirmed writes: 10 clients × "
            f"{e['throughput'][0]['seconds']:.0f} s, at most 100 unconfirmed per client"
            if e["throughput"]
            else "",
            "",
        ]
        rows = []
        for r in e["throughput"]:
            tt = tri_tp(t, r["subscription"]) if t else None
            rows.append(
                [
                    r["subscription"],
                    f"{r['issued']:,}",
                    f"{r['confirmed_in_window']:,}",
                    f(r["confirmed_per_s"]),
                    f(r["drain_ms"], 0),
                    ("yes" if r["converged"] else "NO")
                    + f" ({f(r['converge_after_drain_ms'], 0)} ms)",
                    str(r["confirmed_missing_on_server"]),
                    f"{r['server_count']:,}",
                    "/".join(str(x) for x in sorted(set(r["client_counts"]))),
                    f(r["server_cpu_s_in_window"], 2),
                    f(r["loadgen_cpu_s_in_window"], 2),
                    f(r["mutations_per_commit"], 1),
                    f(tt["confirmedWritesPerS"]) if tt else "—",
                    ("yes" if tt["converged"] else "NO") if tt else "—",
                    str(tt["confirmedButNotOnServer"]) if tt else "—",
                    ratio(r["confirmed_per_s"], tt["confirmedWritesPerS"]) if tt else "—",
                ]
            )
        L += table(
            [
                "subscription",
                "issued",
                "confirmed in window",
                "confirmed/s",
                "drain ms",
                "converged",
                "confirmed but not on server",
                "server rows",
                "client rows",
                "server CPU s",
                "load-gen CPU s",
                "mutations per commit",
                "Triplit /s",
                "Triplit converged",
                "Triplit lost",
                "ratio /s",
            ],
            rows,
        )
        L += [
            "",
            "A write is confirmed when its `res.confirmed` resolves: the server committed it and "
            "this client rebased onto a poke carrying its `last_mutation_id`. `live` keeps a "
            "`subscribe_to_table()` whose callback receives the full result set on every change "
            "(maintained incrementally: each update costs the rows it changed); "
            "`background` has no subscription: the client still syncs the room into its local "
            "store (that is what our clients always do), and convergence is read from it with a "
            "local query. Converged = every client's ids = the confirmed ids = what a fresh "
            "client reads from the server. A writer yields to the event loop only when its "
            "window is full, like bench.mjs's worker.",
            "",
        ]
        init = e.get("initial")
        if init:
            ti = t.get("initial") if t else None
            L += [
                f"### (d) Initial sync of {init['rows']:,} rows (preloaded "
                f"{init['load_batch']:,} rows per mutation)",
                "",
            ]
            rows = []
            for label, ours, theirs in (
                (
                    "preload through one client",
                    (init["preload_ms"], init["preload_rows_per_s"]),
                    (ti["preloadMs"], ti["preloadRowsPerS"]) if ti else None,
                ),
                (
                    "fresh client #1",
                    (init["fresh_client_1"]["ms"], init["fresh_client_1"]["rows_per_s"]),
                    (ti["freshClientWarm1"]["ms"], ti["freshClientWarm1"]["rowsPerS"])
                    if ti
                    else None,
                ),
                (
                    "fresh client #2",
                    (init["fresh_client_2"]["ms"], init["fresh_client_2"]["rows_per_s"]),
                    (ti["freshClientWarm2"]["ms"], ti["freshClientWarm2"]["rowsPerS"])
                    if ti
                    else None,
                ),
                (
                    "fresh client after server restart",
                    (
                        init["fresh_client_after_restart"]["ms"],
                        init["fresh_client_after_restart"]["rows_per_s"],
                    ),
                    (ti["freshClientAfterRestart"]["ms"], ti["freshClientAfterRestart"]["rowsPerS"])
                    if ti
                    else None,
                ),
            ):
                rows.append(
                    [
                        label,
                        f(ours[0], 0),
                        f(ours[1]),
                        f(theirs[0], 0) if theirs else "—",
                        f(theirs[1]) if theirs else "—",
                        ratio(ours[1], theirs[1]) if theirs else "—",
                    ]
                )
            L += table(
                ["step", "ms", "rows/s", "Triplit ms", "Triplit rows/s", "ratio rows/s"], rows
            )
            L += [
                "",
                f"SQLite files: {init['sqlite_bytes']:,} bytes (Triplit: "
                f"{ti['sqliteBytes']:,} bytes). "
                if ti
                else f"SQLite files: {init['sqlite_bytes']:,} bytes. ",
                "The fresh client's clock runs from `connect()` until its subscription's result "
                "first holds every row. The server streams the rows as pre-encoded ops in parts "
                "of about 1 MiB; the client applies them once the final part arrives.",
                "",
            ]
    return L


def shortfalls(
    data: dict[str, Any],
    rows: list[dict[str, Any]],
    targets: list[tuple[str, str, str, bool | None]],
    f: Fmt,
) -> list[str]:
    L = ["## What falls short, and why", ""]
    missed = [t for t in targets if not t[3]]
    if data["quick"]:
        L += [
            "- This is a `--quick` smoke run: the counts are tiny and the peers did not run. "
            "Do not read the numbers as measurements.",
            "",
        ]
    if not missed:
        L += ["Every target in the table above was met in this run.", ""]
    for name, meas, ref, _ in missed:
        L.append(f"- **Missed: {name}** — {meas}" + (f" ({ref})" if ref else "") + ".")
    L.append("")
    e2e = data["e2e_runs"][-1] if data["e2e_runs"] else None
    if e2e and e2e["throughput"]:
        for tp in e2e["throughput"]:
            lg, sv = tp["loadgen_cpu_s_in_window"], tp["server_cpu_s_in_window"]
            wall = tp.get("window_wall_s")
            span = f"the {wall:.1f} s window" if wall else "the window (until the writers stopped)"
            pace = (
                "so on this box the load generator, not the instance, sets the pace; the "
                "instance-writer row of the capacity table is what the server does per "
                "instance without it."
                if lg > sv
                else "and here the server was the busier side."
            )
            L.append(
                f"- **Sustained writes, {tp['subscription']}**: {f(tp['confirmed_per_s'])} "
                f"confirmed/s. Over {span} the load generator used {lg:.1f} CPU-s and the "
                f"server {sv:.1f} CPU-s (2 cores in all). Every client applies every "
                "other client's rows (ten clients: ten times the write rate in row "
                "applications, plus each client's own rebase on every poke), all in one Python "
                "process whose writers hand the loop over only when a window is full, "
                + pace
                + (
                    " In `live` mode each client also re-runs its full-table query and copies "
                    "every row on every local write and every poke, which is O(room size) per "
                    "change: this is what a UI bound to the whole room costs with our engine, "
                    "and it dominates as the room grows (Triplit's live mode pays a similar "
                    "per-change cost on its server)."
                    if tp["subscription"] == "live"
                    else ""
                )
            )
        init = e2e.get("initial")
        if init:
            r = init["fresh_client_after_restart"]["rows_per_s"]
            if r < 100_000:
                L.append(
                    f"- **Initial sync after a server restart**: {f(r)} rows/s. That first "
                    "connection also opens the instance's database in the new process and runs "
                    "its server code paths cold; the warm fresh clients were "
                    f"{f(init['fresh_client_1']['rows_per_s'])} and "
                    f"{f(init['fresh_client_2']['rows_per_s'])} rows/s. The sync itself is a "
                    "single SQL scan turned into pre-encoded ops on the server, and one "
                    "JSON decode plus a bulk load (cyclic GC paused) and a full-table "
                    "subscription re-run on the client."
                )
    cap = data.get("capacity")
    if cap:
        inst = cap["instance"]["mutations_per_s"]
        b = cap["raw_b"]["rows_per_s"]
        L.append(
            f"- **Instance writer vs raw sqlite3 B**: {f(inst)} vs {f(b)} rows/s "
            f"({inst / b:.2f}×). A raw batched upsert costs a few µs; our path per mutation runs "
            "Python code around it — pydantic validation of the input and of the row, the "
            "mutator coroutine, JSON encoding, a SAVEPOINT/RELEASE pair (the design's per-mutation "
            "rollback boundary), and per-commit fan-out. Against raw sqlite3 A (a transaction "
            "per row) the instance writer is faster, because group commit amortises the commit."
        )
    if rows:
        slow = [
            r for r in rows if r.get("rep_p50") and not r["throughput"] and r["p50"] > r["rep_p50"]
        ]
        slow += [
            r for r in rows if r.get("rep_rate") and r["throughput"] and r["rate"] < r["rep_rate"]
        ]
        for r in slow:
            L.append(
                f"- **Client-side {r['name']}** is slower than Replicache in this run "
                f"(p50 {f(r['p50'])} vs {f(r['rep_p50'])} ms"
                + (f", {f(r['rate'], 1)} vs {f(r['rep_rate'], 1)} MiB/s" if r["throughput"] else "")
                + ")."
            )
        if any(r["id"] in ("d", "e10k", "e1k") for r in slow):
            L.append(
                "  Scans copy every value out of the store (`copy_on_read`), and populate "
                "validates each value three times (mutator input at the call site, again "
                "when the handler runs, and the row in `set`); both are pure-Python "
                "per-row costs."
            )
    if e2e and e2e["latency"]:
        big = max(e2e["latency"], key=lambda r: r["N"])
        o = big["write_to_observer_ms"]
        L.append(
            f"- **Write → visible at N={big['N']}**: the observer (client 1) saw a write after "
            f"{f(o['p50'])} ms at p50; the last of the {big['N'] - 1} others after "
            f"{f(big['write_to_all_others_ms']['p50'])} ms. All {big['N']} clients share one "
            "Python process, so the later clients' latency is mostly the time the load generator "
            "spends delivering the same poke to the clients before them."
        )
    loads = [r["load"]["loadavg"][0] for r in data["client_runs"] + data["e2e_runs"]]
    loads += [r["load"]["loadavg"][0] for r in data.get("replicache_runs", [])]
    loads += [r["load"]["loadavg"][0] for r in data.get("triplit_runs", [])]
    if loads and max(loads) >= 1.0:
        L.append(
            f"- **Load**: other work ran on the box during this sitting; the 1-minute load "
            f"average before the runs ranged from {min(loads):.2f} to {max(loads):.2f} on 2 "
            "cores (the runner waits at most `--max-wait` seconds for it to drop). Tails "
            "(p95/p99, max) of both us and the peers are inflated by it."
        )
    L += [
        "- **Single sitting, shared box**: "
        + (
            f"{len(data['client_runs'])} client-side run(s) and {len(data['e2e_runs'])} "
            "end-to-end run(s) of ours, each next to the peer in the same sitting. The peers' "
            "own RESULTS.md use 3 runs; with one end-to-end run, its spread is unknown here."
        ),
        "",
    ]
    return L
