"""Tables on the terminal (rich) and ``docs/benchmarks.md``, from one run's data only."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import median
from typing import Any

from rich.table import Table

from .client_side import ROWS, THROUGHPUT_ROWS
from .common import console

__all__ = ["print_tables", "write_markdown"]

#: The brief's Replicache a1 reference (used only when Replicache was not run in this sitting).
BRIEF_A1 = (0.096, 0.27)


def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, int):
        return f"{x:,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.{nd}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "—"
    return f"{a / b:.2f}×"


def _med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return median(xs) if xs else None


# -- derived numbers --------------------------------------------------------------------------


def client_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per workload row: our and Replicache's medians over the runs."""
    out = []
    for our_id, rep_id, name in ROWS:
        ours = [r["results"][our_id] for r in data["client_runs"] if our_id in r["results"]]
        reps = [r["rows"][rep_id] for r in data.get("replicache_runs", []) if rep_id in r["rows"]]
        if not ours:
            continue
        tp = our_id in THROUGHPUT_ROWS
        row: dict[str, Any] = {"id": our_id, "name": name, "throughput": tp, "n": ours[0]["n"]}
        row["p50"] = _med([o["p50"] for o in ours])
        row["p95"] = _med([o["p95"] for o in ours])
        row["p99"] = _med([o["p99"] for o in ours])
        row["p50_runs"] = [o["p50"] for o in ours]
        row["p95_runs"] = [o["p95"] for o in ours]
        if tp:
            row["rate"] = _med([o["extra"]["mib_s_p50"] for o in ours])
        else:
            row["rate"] = _med([o["extra"].get("ops_per_s") for o in ours])
        row["pending"] = ours[0]["extra"].get("pending_at_end")
        if reps:
            row["rep_p50"] = _med([r["p50"] for r in reps])
            row["rep_p95"] = _med([r["p95"] for r in reps])
            row["rep_rate"] = _med(
                [r["mibPerSecAtP50"] if tp else r.get("opsPerSec") for r in reps]
            )
        out.append(row)
    return out


def triplit_latency(tri: dict[str, Any], n: int, push: str) -> dict[str, Any] | None:
    for entry in tri.get("latency", []):
        if entry["N"] == n and entry["push"] == push:
            return entry
    return None


def triplit_tp(tri: dict[str, Any], mode: str) -> dict[str, Any] | None:
    for entry in tri.get("throughput", []):
        if entry["subscription"] == mode:
            return entry
    return None


def targets(data: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, reference, met)."""
    out: list[tuple[str, str, str, bool | None]] = []
    rows = {r["id"]: r for r in client_rows(data)} if data["client_runs"] else {}
    a1 = rows.get("a1/cb")
    if a1:
        if a1.get("rep_p50") is not None:
            ref50, ref95, src = a1["rep_p50"], a1["rep_p95"], "Replicache, this sitting"
        else:
            ref50, ref95, src = BRIEF_A1[0], BRIEF_A1[1], "Replicache, figure from the brief"
        met = a1["p50"] <= 2 * ref50 and a1["p95"] <= 2 * ref95
        out.append(
            (
                "reactive loop a1 p50 and p95 within 2× of Replicache",
                f"p50 {_f(a1['p50'])} ms, p95 {_f(a1['p95'])} ms",
                f"{src}: p50 {_f(ref50)} / p95 {_f(ref95)} ms (2×: {_f(2 * ref50)} / "
                f"{_f(2 * ref95)})",
                met,
            )
        )
    if data["e2e_runs"]:
        e2e = data["e2e_runs"][-1]
        big = max(e2e["latency"], key=lambda r: r["N"]) if e2e["latency"] else None
        if big:
            o = big["write_to_observer_ms"]
            out.append(
                (
                    f"write → visible with {big['N']} clients: p50 ≤ 5 ms, p99 ≤ 25 ms",
                    f"p50 {_f(o['p50'])} ms, p99 {_f(o['p99'])} ms (timeouts {big['timeouts']})",
                    "observer = client 1",
                    o["p50"] <= 5 and o["p99"] <= 25 and big["timeouts"] == 0,
                )
            )
        cap = data.get("capacity")
        subjects: list[tuple[str, float, str, bool]] = [
            (
                f"end-to-end, 10 clients, {tp['subscription']}",
                tp["confirmed_per_s"],
                f"converged {_f(tp['converged'])}, lost {tp['confirmed_missing_on_server']}",
                bool(tp["converged"]) and tp["confirmed_missing_on_server"] == 0,
            )
            for tp in e2e["throughput"]
        ]
        if cap:
            subjects.append(
                (
                    "instance writer alone (no network, no clients)",
                    cap["instance"]["mutations_per_s"],
                    "zero lost: row count checked",
                    True,
                )
            )
        for what, rate, sound_text, sound in subjects:
            ok = rate >= 10_000 and sound
            ref = ""
            if cap:
                a, b = cap["raw_a"]["rows_per_s"], cap["raw_b"]["rows_per_s"]
                ok = ok and rate >= 0.5 * a and rate >= 0.5 * b
                ref = (
                    f"raw sqlite3 A (txn per row) {_f(a)}/s: {_ratio(rate, a)} "
                    f"(≥ 0.5×: {_f(rate >= 0.5 * a)}); B (batched) {_f(b)}/s: "
                    f"{_ratio(rate, b)} (≥ 0.5×: {_f(rate >= 0.5 * b)})"
                )
            out.append(
                (
                    "≥ 10,000 confirmed mutations/s per instance, converged, zero lost, "
                    f"≥ 0.5× raw sqlite3 (A and B) — {what}",
                    f"{_f(rate)}/s (≥ 10,000: {_f(rate >= 10_000)}), {sound_text}",
                    ref,
                    ok,
                )
            )
        init = e2e.get("initial")
        if init:
            rates = [
                init[k]["rows_per_s"]
                for k in ("fresh_client_1", "fresh_client_2", "fresh_client_after_restart")
            ]
            out.append(
                (
                    f"initial sync ≥ 100,000 rows/s ({init['rows']:,} rows)",
                    " / ".join(f"{_f(r)}" for r in rates) + " rows/s (#1 / #2 / restart)",
                    "",
                    min(rates) >= 100_000,
                )
            )
    return out


# -- terminal ---------------------------------------------------------------------------------


def print_tables(data: dict[str, Any]) -> None:
    if data["client_runs"]:
        t = Table(title="Client-side (WORKLOAD.md), ms; median over runs")
        for c in (
            "workload",
            "p50",
            "p95",
            "p99",
            "ops/s | MiB/s",
            "Replicache p50",
            "p95",
            "ratio p50",
            "ratio p95 | MiB/s",
        ):
            t.add_column(c, justify="left" if c == "workload" else "right")
        for r in client_rows(data):
            ratio2 = (
                _ratio(r["rate"], r.get("rep_rate"))
                if r["throughput"]
                else _ratio(r["p95"], r.get("rep_p95"))
            )
            t.add_row(
                r["name"][:60],
                _f(r["p50"]),
                _f(r["p95"]),
                _f(r["p99"]),
                _f(r["rate"], 1),
                _f(r.get("rep_p50")),
                _f(r.get("rep_p95")),
                _ratio(r["p50"], r.get("rep_p50")),
                ratio2,
            )
        console.print(t)
    for e2e in data["e2e_runs"]:
        t = Table(title="End-to-end write → visible (ms, observer = client 1)")
        for c in ("N", "p50", "p95", "p99", "all p50", "all p99", "timeouts", "server CPU s"):
            t.add_column(c, justify="right")
        for r in e2e["latency"]:
            o, a = r["write_to_observer_ms"], r["write_to_all_others_ms"]
            t.add_row(
                str(r["N"]),
                _f(o["p50"]),
                _f(o["p95"]),
                _f(o["p99"]),
                _f(a["p50"]),
                _f(a["p99"]),
                str(r["timeouts"]),
                _f(r["server_cpu_s"], 2),
            )
        console.print(t)
        t = Table(title="Sustained confirmed writes, 10 clients")
        for c in (
            "mode",
            "confirmed/s",
            "issued",
            "converged",
            "lost",
            "server CPU s",
            "load-gen CPU s",
            "mut/commit",
        ):
            t.add_column(c, justify="right")
        for r in e2e["throughput"]:
            t.add_row(
                r["subscription"],
                _f(r["confirmed_per_s"]),
                _f(r["issued"]),
                _f(r["converged"]),
                str(r["confirmed_missing_on_server"]),
                _f(r["server_cpu_s_in_window"], 2),
                _f(r["loadgen_cpu_s_in_window"], 2),
                _f(r["mutations_per_commit"], 1),
            )
        console.print(t)
        if e2e.get("initial"):
            i = e2e["initial"]
            console.print(
                f"initial sync {i['rows']:,} rows: preload {_f(i['preload_rows_per_s'])} "
                f"rows/s; fresh #1 {_f(i['fresh_client_1']['rows_per_s'])}, #2 "
                f"{_f(i['fresh_client_2']['rows_per_s'])}, after restart "
                f"{_f(i['fresh_client_after_restart']['rows_per_s'])} rows/s"
            )
    t = Table(title="Targets")
    for c in ("target", "measured", "reference", "met"):
        t.add_column(c)
    for name, meas, ref, met in targets(data):
        t.add_row(name, meas, ref, "yes" if met else "NO")
    console.print(t)


# -- markdown ---------------------------------------------------------------------------------


def _md_table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    al = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else ":--" for a in al]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def write_markdown(data: dict[str, Any], path: Path, json_path: Path) -> None:
    from . import narrative

    m = data["machine"]
    L: list[str] = []
    L += [
        "# Benchmarks",
        "",
        "Run everything (progress is printed; a full run takes 30-40 minutes on the 2-core box "
        "and keeps both cores busy):",
        "",
        "```sh",
        "/work/main/.venv/bin/python -m benchmarks          # full: ours + peers; writes this file",
        "/work/main/.venv/bin/python -m benchmarks --quick  # smoke run: tiny counts, no peers",
        "/work/main/.venv/bin/python -m benchmarks --skip-peers",
        "python benchmarks/run.py --help   # same runner: --runs, --e2e-runs, --only, ...",
        "```",
        "",
        "Every number below was written by the run described here; nothing is copied from "
        f"elsewhere. Raw data of this run: `{_rel(json_path)}`.",
        "",
        "## This run",
        "",
    ]
    kind = (
        "QUICK smoke run (tiny iteration counts, peers skipped) — not a measurement"
        if data["quick"]
        else (
            "full run"
            + (", peers skipped" if data["skip_peers"] else ", peers run in the same sitting")
        )
    )
    L += _md_table(
        ["fact", "value"],
        [
            ["command", "`python -m benchmarks " + " ".join(data["argv"]) + "`"],
            ["kind", kind],
            ["started / finished", f"{data['started']} / {data['finished']}"],
            [
                "client-side runs (ours, Replicache)",
                f"{len(data['client_runs'])}, {len(data.get('replicache_runs', []))} (interleaved)",
            ],
            [
                "end-to-end runs (ours, Triplit)",
                f"{len(data['e2e_runs'])}, {len(data.get('triplit_runs', []))}",
            ],
            ["`nproc` / CPU", f"{m['nproc']} / {m['cpu']}"],
            ["memory", m["memory"]],
            ["OS / kernel", f"{m['os']} / {m['kernel']}"],
            ["Python", f"{m['implementation']} {m['python']} ({_event_loop(m)})"],
            ["SQLite (Python's sqlite3)", m["sqlite"]],
            ["packages", ", ".join(f"{k} {v}" for k, v in m["packages"].items())],
            ["Node (peers)", m["node"]],
            ["Replicache", str(data.get("replicache_version", "not run"))],
            ["Triplit", _triplit_versions(data)],
            ["load average at start / end", f"{m['loadavg_start']} / {m.get('loadavg_end')}"],
            ["load before each run", _loads(data)],
        ],
        "ll",
    )
    L += [
        "",
        "The box is shared with other engineers' work, so runs wait (bounded, "
        "`--max-load`, `--max-wait`) for the 1-minute load average to settle; the load seen "
        "before each run is listed above.",
        "",
    ]
    L += ["### Value generator conformance (WORKLOAD.md §2)", ""]
    L += _md_table(
        ["call", "bytes", "sha256", "matches"],
        [[c, str(n), f"`{h}`", "yes" if ok else "NO"] for c, n, h, ok in data["vectors"]],
        "lrll",
    )
    L += [""]
    L += ["## Targets (issue 2)", ""]
    L += _md_table(
        ["target", "measured (this run)", "reference", "met"],
        [[a, b, c, "**yes**" if d else "**no**"] for a, b, c, d in targets(data)],
        "llll",
    )
    L += [""]
    if data["client_runs"]:
        L += narrative.client_section(data, client_rows(data), _md_table, _f, _ratio)
    if data.get("capacity"):
        L += narrative.capacity_section(data, _md_table, _f, _ratio)
    if data["e2e_runs"]:
        L += narrative.e2e_section(data, _md_table, _f, _ratio, triplit_latency, triplit_tp)
    L += narrative.shortfalls(
        data, client_rows(data) if data["client_runs"] else [], targets(data), _f
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(L) + "\n")


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(p)


def _loads(data: dict[str, Any]) -> str:
    parts = []
    for i, r in enumerate(data["client_runs"], 1):
        parts.append(f"ours client #{i} {r['load']['loadavg'][0]}")
    for i, r in enumerate(data.get("replicache_runs", []), 1):
        parts.append(f"Replicache #{i} {r['load']['loadavg'][0]}")
    if data.get("capacity"):
        parts.append(f"capacity {data['capacity']['load']['loadavg'][0]}")
    for i, r in enumerate(data["e2e_runs"], 1):
        parts.append(f"ours e2e #{i} {r['load']['loadavg'][0]}")
    for i, r in enumerate(data.get("triplit_runs", []), 1):
        parts.append(f"Triplit #{i} {r['load']['loadavg'][0]}")
    return "; ".join(parts) or "—"


def _triplit_versions(data: dict[str, Any]) -> str:
    runs = data.get("triplit_runs") or []
    if not runs:
        return "not run"
    return ", ".join(f"{k} {v}" for k, v in runs[0].get("versions", {}).items())


def _event_loop(m: dict[str, Any]) -> str:
    loop = m.get("event_loop")
    if loop is None:
        return "event loop not recorded by this run"
    if loop.startswith("uvloop"):
        return f"{loop} in the load generator and (uvicorn picks it) in the server"
    return "the asyncio event loop in the load generator and the server (uvloop not installed)"
