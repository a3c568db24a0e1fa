"""The page refuses a value nested deeper than the server accepts, locally, in real Chromium.

The JS shell checks mutation args itself (it sends mutations on its own until Pyodide is ready,
and before handing args to the engine), and the Python engine in the page checks args and row
values with pydantic-core compiled to wasm, whose own recursion guard (49) is the tightest on
the way. Either way: the same error kind and message as the Python side, nothing queued, and
the connection stays healthy (the server never sees the frame it would close with 4003).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synced_store.core.keys import MAX_VALUE_DEPTH, check_depth
from synced_store.errors import ValueTooDeepError
from synced_store.web.testing import WebServer

from .conftest import TIMEOUT_MS
from .depth_app import nest

REPO = Path(__file__).resolve().parents[2]
SHELL = REPO / "src" / "synced_store" / "web" / "static" / "synced-store.js"
LIMIT = MAX_VALUE_DEPTH

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{TITLE}}</title><link rel="icon" href="data:,">
<script type="application/json" id="synced-store-config">{{CONFIG}}</script>
</head><body></body></html>
"""

START = """async ({room, user}) => {
  const mod = await import("/_ss/static/synced-store.js");
  const config = JSON.parse(document.getElementById("synced-store-config").textContent);
  window.ss = mod;
  window.store = await mod.createStore(config, {instanceId: room, token: user, userId: user});
  window.sent = [];
  const send = store._send.bind(store);
  store._send = (m) => { sent.push(typeof m === "string" ? m : JSON.stringify(m)); send(m); };
  await new Promise((resolve) => {  // (no wait_for_function: the page's CSP forbids eval)
    if (store.status === "connected") { resolve(); return; }
    const off = store.on("status", (s) => { if (s === "connected") { off(); resolve(); } });
  });
}"""

PUSHES = "sent.filter((f) => JSON.parse(f).type === 'push')"

# Resolves to {ok, id} or {ok: false, kind, message}; confirmed: waits for the server too.
# (Values cross into the page as JSON text: Playwright's own serializer recurses.)
MUTATE = """async ([name, args, confirm]) => {
  try {
    const r = await store.mutate(name, JSON.parse(args));
    if (confirm) await r.confirmed;
    return {ok: true, id: r.id};
  } catch (e) { return {ok: false, kind: e.kind ?? null, message: e.message}; }
}"""


def too_deep_message(what: str) -> str:
    with pytest.raises(ValueTooDeepError) as exc:
        check_depth(nest(LIMIT + 1), what=what)
    return str(exc.value)


def test_the_shell_uses_the_python_limit() -> None:
    m = re.search(r"^const MAX_VALUE_DEPTH = (\d+);", SHELL.read_text(), re.M)
    assert m is not None, "synced-store.js must define MAX_VALUE_DEPTH"
    assert int(m.group(1)) == MAX_VALUE_DEPTH


@pytest.fixture(scope="module")
def depth_server(
    _browser_requirements: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    data = tmp_path_factory.mktemp("depth-data")
    page = data.parent / (data.name + "-page.html")
    page.write_text(PAGE)
    module = ["tests.web.depth_server", "--port", "{port}", "--data-dir", "{data_dir}"]
    with WebServer([*module, "--page", str(page)], data, pythonpath=[str(REPO)]) as server:
        yield server


@pytest.fixture
def open_page(browser: Any, depth_server: WebServer, request: pytest.FixtureRequest) -> Any:
    contexts: list[Any] = []
    errors: list[str] = []
    room = "d-" + request.node.name.replace("_", "-")[:40].strip("-")

    def open_(user: str, *, engine: bool) -> Any:
        ctx = browser.new_context()
        ctx.set_default_timeout(TIMEOUT_MS)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{depth_server.base_url}/" + ("" if engine else "?nopy=1"))
        page.evaluate(START, {"room": room, "user": user})
        if engine:
            page.evaluate("store.ready")
            assert page.evaluate("store.optimistic") is True
        return page

    yield open_
    for ctx in contexts:
        ctx.close()
    assert errors == [], errors


def _values(seed: int, n: int) -> list[Any]:
    rnd = random.Random(seed)

    def gen(d: int) -> Any:
        r = rnd.random()
        if d > 7 or r < 0.3:
            return rnd.choice([1, "x", None, 2.5, True, "", 0])
        if r < 0.65:
            return [gen(d + 1) for _ in range(rnd.randint(0, 3))]
        return {f"k{i}": gen(d + 1) for i in range(rnd.randint(0, 3))}

    return [gen(0) for _ in range(n)]


def _python_check(value: Any, limit: int) -> bool:
    try:
        check_depth(value, limit=limit)
    except ValueTooDeepError:
        return False
    return True


@pytest.mark.browser
def test_the_js_check_agrees_with_the_python_check(open_page: Any) -> None:
    page = open_page("ann", engine=False)
    values = [*_values(7, 300), nest(LIMIT), nest(LIMIT + 1), nest(199), {"a": nest(LIMIT - 1)}]
    limits = list(range(0, 9))
    js = page.evaluate(
        """([values, limits]) => JSON.parse(values).map((v) => limits.map((l) => {
          try { ss.checkDepth(v, l); return true; } catch (e) { return false; }
        }))""",
        [json.dumps(values), limits],
    )
    assert js == [[_python_check(v, lim) for lim in limits] for v in values]
    at_default = page.evaluate(
        """(vs) => JSON.parse(vs).map((v) => { try { ss.checkDepth(v); return null; }
                                               catch (e) { return [e.kind, e.message]; } })""",
        json.dumps([nest(LIMIT), nest(LIMIT + 1)]),
    )
    assert at_default == [None, ["value_too_deep", too_deep_message("value")]]


@pytest.mark.browser
def test_page_refuses_too_deep_args_before_the_engine_runs(open_page: Any) -> None:
    page = open_page("bob", engine=False)
    assert page.evaluate("store.optimistic") is False  # the shell sends mutations itself
    for depth in (LIMIT, 199):  # args nest one level more than the value
        res = page.evaluate(MUTATE, ["put", json.dumps({"key": "k", "value": nest(depth)}), False])
        assert res == {
            "ok": False,
            "kind": "value_too_deep",
            "message": too_deep_message("input for mutator 'put'"),
        }
    assert page.evaluate("store.pending.length") == 0
    assert page.evaluate(PUSHES) == []
    # At the limit it goes through, and the server takes it: the session never broke.
    res = page.evaluate(MUTATE, ["put", json.dumps({"key": "k", "value": nest(LIMIT - 1)}), True])
    assert res["ok"], res
    assert page.evaluate("store.status") == "connected"
    assert page.evaluate("store.endReason") is None
    assert len(page.evaluate(PUSHES)) == 1


@pytest.mark.browser
def test_python_engine_in_the_page_refuses_too_deep_values(open_page: Any) -> None:
    page = open_page("cy", engine=True)
    # A row value built by the mutator: checked by TableHandle.set in Pyodide. 33 passes
    # pydantic-core's wasm guard (49), so only the depth check refuses it; 60 and 199 fail
    # validation first, and the given value's depth still decides the error.
    for depth in (LIMIT + 1, 60, 199):
        res = page.evaluate(MUTATE, ["nest", json.dumps({"key": "deep", "depth": depth}), False])
        assert res == {
            "ok": False,
            "kind": "value_too_deep",
            "message": too_deep_message("value for docs/deep"),
        }
    # Args checked by ClientEngine.mutate in Pyodide (the bridge, below the shell's own check).
    for depth in (LIMIT, 45, 100):
        args = json.dumps({"key": "k", "value": nest(depth)})
        res = json.loads(page.evaluate("(a) => store._bridge.call('mutate', 'put', a)", args))
        assert res["ok"] is False
        assert res["kind"] == "value_too_deep"
        assert res["error"] == too_deep_message("input for mutator 'put'")
    assert page.evaluate("store.pending.length") == 0
    assert page.evaluate(PUSHES) == []
    # Values at the limit: accepted by the page's pydantic (wasm) and by the server.
    res = page.evaluate(MUTATE, ["nest", json.dumps({"key": "ok", "depth": LIMIT}), True])
    assert res["ok"], res
    res = page.evaluate(MUTATE, ["put", json.dumps({"key": "k", "value": nest(LIMIT - 1)}), True])
    assert res["ok"], res
    assert page.evaluate("store.status") == "connected"
    docs = "new Promise((r) => store.subscribe({table: 'docs'}, (rs) => r(JSON.stringify(rs))))"
    rows = json.loads(page.evaluate(docs))
    assert {row["key"]: row["value"] for row in rows} == {
        "ok": nest(LIMIT),
        "k": nest(LIMIT - 1),
    }


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@pytest.mark.browser
def test_msgspec_in_the_page_decodes_pokes_with_values_at_the_limit(open_page: Any) -> None:
    # The engine in the page decodes every server frame with msgspec compiled to wasm. A poke
    # carrying a row value at the limit nests 3 more levels (poke, patch, op): decoded, and so
    # is one as deep as the server's own frame parser accepts (200 levels in all).
    page = open_page("dee", engine=True)
    page.evaluate("store.setNetworkEnabled(false)")  # the frames below are fed by hand
    cookie = page.evaluate("store.cookie")
    for depth in (LIMIT, 200 - 3):
        value = nest(depth)
        op = {"op": "set", "t": "docs", "k": f"d{depth}", "v": value}
        poke = {"type": "poke", "base_cookie": cookie, "cookie": cookie + 1, "patch": [op]}
        assert _depth(poke) == depth + 3
        why = page.evaluate("(f) => store._bridge.call('receive', f)", json.dumps(poke))
        assert why is None, why
        cookie += 1
    assert page.evaluate("store.cookie") == cookie
    docs = "new Promise((r) => store.subscribe({table: 'docs'}, (rs) => r(JSON.stringify(rs))))"
    rows = {row["key"]: row["value"] for row in json.loads(page.evaluate(docs))}
    assert rows == {f"d{LIMIT}": nest(LIMIT), "d197": nest(197)}
