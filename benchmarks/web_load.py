"""Browser load times of the chat page (headless Chromium, everything served from 127.0.0.1).

Measured from navigation start, with the page's own ``performance.mark``s:

- **first messages rendered** (``synced-store:first-messages``): the room's messages are in the
  DOM. Cold = a fresh browser profile (empty HTTP cache, empty IndexedDB): the shell connects,
  gets the first poke and renders it, without waiting for Python.
- **optimistic mutators ready** (``synced-store:optimistic-ready``): Pyodide is up, pydantic and
  the app's mutators are imported and the sans-I/O engine took over. Cold as above; warm =
  a new tab in the same profile (HTTP cache, wasm code cache and IndexedDB filled); reload =
  reloading one tab (the renderer process also keeps compiled wasm in memory).

Targets (issue 4): first messages <= 1.5 s cold; optimistic mutators ready <= 2 s warm.

    .venv/bin/python benchmarks/web_load.py [--quick] [--json out.json]
    run(quick) -> dict          (call it from a thread: it uses Playwright's sync API)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.sections import run_facts, write_section  # noqa: E402
from synced_store.web.testing import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    NetworkGuard,
    WebServer,
    launch_chromium,
    missing_requirements,
)

TARGETS = {"cold_first_messages_ms": 1500, "warm_optimistic_ready_ms": 2000}
MARKS = (
    "synced-store:first-messages",
    "synced-store:pyodide-import",
    "synced-store:pyodide-loaded",
    "synced-store:wheels-loaded",
    "synced-store:engine-imported",
    "synced-store:optimistic-ready",
)
MARKS_JS = (
    "() => Object.fromEntries(performance.getEntriesByType('mark').map(m => [m.name, m.startTime]))"
)
BYTES_JS = (
    "() => performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize,"
    " 0) + (performance.getEntriesByType('navigation')[0]?.transferSize || 0)"
)


async def _seed(url: str, room: str, n: int) -> None:
    from examples.chat.app import backend

    from synced_store.client import connect

    store = await connect(url, backend, instance_id=room, token="seeder")
    try:
        for i in range(n):
            await store.mutate.sendMessage(
                {"id": f"m{i:05d}", "text": f"message {i}: " + "lorem ipsum dolor sit amet " * 3}
            )
        await store.wait_for_sync(timeout=60)
    finally:
        await store.close()


def _load(page: Any, url: str, n: int) -> dict[str, float]:
    page.goto(url)
    page.wait_for_function(f"document.querySelectorAll('#messages li').length >= {n}")
    page.wait_for_selector("body[data-mode=optimistic]", timeout=120_000)
    marks: dict[str, float] = page.evaluate(MARKS_JS)
    out: dict[str, float] = {m: round(marks[m]) for m in MARKS if m in marks}
    out["navigation_start"] = 0
    return out


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values)),
        "min": round(min(values)),
        "max": round(max(values)),
        "runs": [round(v) for v in values],
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Measure cold and warm loads; returns medians (ms) and every run."""
    why = missing_requirements()
    if why is not None:
        return {"skipped": why}
    from playwright.sync_api import sync_playwright

    runs = 3 if quick else 7
    n_messages = 20 if quick else 50
    room = "bench-load"
    out: dict[str, Any] = {"runs": runs, "messages": n_messages, "targets_ms": TARGETS}
    with (
        tempfile.TemporaryDirectory() as tmp,
        WebServer.demo(
            "chat", Path(tmp) / "data", "--bot-pace", "0.05", "--bot-words", "40"
        ) as server,
    ):
        asyncio.run(_seed(f"ws://127.0.0.1:{server.port}", room, n_messages))
        url = f"{server.base_url}/?room={room}&user=bench"
        cold: list[dict[str, float]] = []
        warm: list[dict[str, float]] = []
        reload: list[dict[str, float]] = []
        blocked: list[str] = []
        cold_bytes: list[int] = []
        with sync_playwright() as p:
            browser = launch_chromium(p)
            for _ in range(runs):
                ctx = browser.new_context()
                guard = NetworkGuard(ctx)
                sizes: list[int] = []

                def on_finished(req: Any, sizes: list[int] = sizes) -> None:
                    got = req.sizes()
                    sizes.append(got["responseBodySize"] + got["responseHeadersSize"])

                ctx.on("requestfinished", on_finished)
                page = ctx.new_page()
                cold.append(_load(page, url, n_messages))
                cold_bytes.append(sum(sizes))
                blocked += guard.off_machine()
                ctx.close()
            browser.close()
            # Warm: one real browser profile on disk; the first load fills its caches.
            with tempfile.TemporaryDirectory() as profile:
                ctx = p.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                guard = NetworkGuard(ctx)
                page = ctx.new_page()
                _load(page, url, n_messages)
                page.close()
                for _ in range(runs):
                    # A new tab each time (the user opens the app again): the previous
                    # tab's Python heap is not being torn down while this one loads.
                    page = ctx.new_page()
                    warm.append(_load(page, url, n_messages))
                    page.close()
                # Reloads of one tab (same renderer process: V8 keeps compiled wasm in memory).
                page = ctx.new_page()
                _load(page, url, n_messages)
                for _ in range(runs):
                    reload.append(_load(page, url, n_messages))
                blocked += guard.off_machine()
                ctx.close()

    def col(rows: list[dict[str, float]], mark: str) -> list[float]:
        return [r[mark] for r in rows if mark in r]

    out["cold_first_messages_ms"] = _summary(col(cold, "synced-store:first-messages"))
    out["cold_optimistic_ready_ms"] = _summary(col(cold, "synced-store:optimistic-ready"))
    out["warm_first_messages_ms"] = _summary(col(warm, "synced-store:first-messages"))
    out["warm_optimistic_ready_ms"] = _summary(col(warm, "synced-store:optimistic-ready"))
    out["reload_first_messages_ms"] = _summary(col(reload, "synced-store:first-messages"))
    out["reload_optimistic_ready_ms"] = _summary(col(reload, "synced-store:optimistic-ready"))
    out["cold_transfer_bytes"] = int(statistics.median(cold_bytes))
    # Where the warm time goes (medians of the phase boundaries).
    phases = {}
    for name, (a, b) in {
        "start_python": ("navigation_start", "synced-store:pyodide-import"),
        "pyodide_runtime_init": ("synced-store:pyodide-import", "synced-store:pyodide-loaded"),
        "install_wheels": ("synced-store:pyodide-loaded", "synced-store:wheels-loaded"),
        "import_engine_and_mutators": (
            "synced-store:wheels-loaded",
            "synced-store:engine-imported",
        ),
        "engine_start": ("synced-store:engine-imported", "synced-store:optimistic-ready"),
    }.items():
        phases[name] = {
            "cold": round(statistics.median([r[b] - r[a] for r in cold if a in r and b in r])),
            "warm": round(statistics.median([r[b] - r[a] for r in warm if a in r and b in r])),
        }
    out["phases_ms"] = phases
    out["requests_off_machine"] = blocked
    out["met"] = {
        "cold_first_messages": out["cold_first_messages_ms"]["median"]
        <= TARGETS["cold_first_messages_ms"],
        "warm_optimistic_ready": out["warm_optimistic_ready_ms"]["median"]
        <= TARGETS["warm_optimistic_ready_ms"],
    }
    out["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    res = run(args.quick)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    if args.write_doc:
        write_section(
            "web",
            doc_section(
                res,
                "python benchmarks/web_load.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
            ),
        )
    return 0


def doc_section(res: dict[str, Any], command: str) -> str:
    """The web-load section of docs/benchmarks.md (issue 4's targets)."""

    def row(label: str, key: str, target: int | None) -> str:
        v = res[key]
        met = "" if target is None else ("**yes**" if v["median"] <= target else "**no**")
        tgt = "" if target is None else f"≤ {target} ms"
        return f"| {label} | {v['median']} | {v['min']}–{v['max']} | {tgt} | {met} |"

    lines = [
        "## Browser: loading the chat page (issue 4)",
        "",
        run_facts(command),
        "",
        "Headless Chromium (Debian) via Playwright against `synced-store demo chat` on 127.0.0.1;",
        f"cold = empty cache and IndexedDB ({res['cold_transfer_bytes']:,} bytes transferred),",
        "warm = a new tab with the HTTP cache primed. Requests that left the machine: "
        f"{len(res['requests_off_machine'])}.",
        "",
        "| measure | median ms | range ms | target | met |",
        "| :-- | --: | :-- | :-- | :-- |",
        row("first messages rendered, cold", "cold_first_messages_ms", 1500),
        row("first messages rendered, warm", "warm_first_messages_ms", None),
        row("optimistic mutators ready, cold", "cold_optimistic_ready_ms", None),
        row("optimistic mutators ready, warm (new tab)", "warm_optimistic_ready_ms", 2000),
        row("optimistic mutators ready, reload", "reload_optimistic_ready_ms", None),
        "",
        "Where the time goes (median ms, cold / warm): "
        + "; ".join(f"{k} {v['cold']} / {v['warm']}" for k, v in res["phases_ms"].items())
        + ".",
        "",
        "Why warm misses 2 s: the cache removes every download, but Pyodide still has to start",
        "CPython inside wasm (1.5–2.4 s of CPU on an idle core, more under load), then install",
        "the wheels and import pydantic and the engine. Messages render from synced data long",
        "before that, and mutations go to the server non-optimistically until the engine is",
        "ready; Pyodide runs in a Web Worker, so the page never freezes. See docs/browser.md.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
