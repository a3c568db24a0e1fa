"""The page's Python bridge without a browser: a thin pump around the engine (always run).

Frames go in raw, as the server sent them; frames and events come out of ``take_output``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from synced_store.web import python_bundle
from synced_store.web.pyodide_bridge import Bridge

SCHEMA_VERSION = 1


@pytest.fixture(scope="module")
def spec() -> str:
    from examples.chat.app import backend

    assert backend.schema.schema_version == SCHEMA_VERSION
    return json.dumps(python_bundle(backend, "examples.chat").spec)


def state(**kw: Any) -> str:
    st: dict[str, Any] = {
        "user_id": "alice",
        "client_id": "c1",
        "next_mutation_id": 1,
        "cookie": None,
        "last_mutation_id": 0,
        "rows": [],
        "pending": [],
    }
    st.update(kw)
    return json.dumps(st)


def frame(**msg: Any) -> str:
    return json.dumps(msg, separators=(",", ":"))


def connected(last_mutation_id: int = 0) -> str:
    return frame(
        type="connected",
        client_id="c1",
        user_id="alice",
        last_mutation_id=last_mutation_id,
        instance_id="lobby",
        schema_version=SCHEMA_VERSION,
    )


def output(b: Bridge) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(b.take_output())
    return out


def events(out: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in out["events"] if e["type"] == kind]


def message(mid: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": mid, "text": text, "role": "user", "senderId": "alice", **extra}


def test_mutations_run_in_the_page_and_the_server_confirms_them(spec: str) -> None:
    b = Bridge(spec, state())
    b.subscribe_table(1, "messages", "public")
    assert output(b)["results"]["1"]["rows"] == []
    b.connect("alice")
    assert b.receive(connected()) is None
    out = output(b)
    assert [json.loads(f)["type"] for f in out["send"]] == ["connect"]
    assert json.loads(out["send"][0])["client_id"] == "c1"
    assert events(out, "connected") == [
        {"type": "connected", "user_id": "alice", "client_id": "c1", "last_mutation_id": 0}
    ]
    res = json.loads(b.mutate("sendMessage", json.dumps({"id": "m1", "text": "hi"}), "k1"))
    assert res["ok"]
    assert res["mutation"] == [1, "sendMessage", {"id": "m1", "text": "hi"}, 1, "k1"]
    out = output(b)
    assert json.loads(out["send"][0]) == {
        "type": "push",
        "mutations": [{"id": 1, "name": "sendMessage", "args": {"id": "m1", "text": "hi"}}],
    }
    assert out["pending_keys"] == [["", "messages", "m1"]]
    [row] = out["results"]["1"]["rows"]
    assert row[0] == "m1"
    assert row[2]["senderId"] == "alice"
    bad = json.loads(b.mutate("sendMessage", json.dumps({"id": 5})))
    assert not bad["ok"]
    assert bad["kind"] == "invalid_input"
    assert "invalid" in bad["error"].lower()
    value = message("m1", "hi")
    poke = frame(
        type="poke",
        cookie=3,
        last_mutation_id=1,
        patch=[{"op": "set", "t": "messages", "k": "m1", "v": value}],
    )
    assert b.receive(poke) is None
    out = output(b)
    assert out["pending_keys"] == []
    assert events(out, "confirmed") == [{"type": "confirmed", "ids": [1]}]
    assert events(out, "snapshot") == [
        {
            "type": "snapshot",
            "reset": False,
            "rows": [["", "messages", "m1", "", value]],
            "cookie": 3,
            "last_mutation_id": 1,
        }
    ]
    assert b.pending() == "[]"


def test_restored_pending_mutations_keep_their_version_and_dedupe_key(spec: str) -> None:
    pending = [
        [3, "sendMessage", {"id": "m8", "text": "confirmed already"}, 1, None],
        [4, "sendMessage", {"id": "m9", "text": "later"}, 1, "draft"],
    ]
    b = Bridge(spec, state(cookie=2, last_mutation_id=3, next_mutation_id=5, pending=pending))
    assert json.loads(b.pending()) == pending[1:]
    b.subscribe_table(7, "messages", "public")
    out = output(b)
    assert [r[0] for r in out["results"]["7"]["rows"]] == ["m9"]
    assert out["pending_keys"] == [["", "messages", "m9"]]
    b.connect("alice")
    b.receive(connected(3))
    sent = [json.loads(f) for f in output(b)["send"]]
    assert sent[0]["type"] == "connect"
    assert sent[0]["last_mutation_id"] == 3
    assert sent[0]["cookie"] == 2
    assert sent[1]["mutations"] == [{"id": 4, "name": "sendMessage", "args": pending[1][2]}]


def test_frames_reach_the_engine_raw_append_frames_and_parts_included(spec: str) -> None:
    b = Bridge(spec, state())
    b.subscribe_table(1, "messages", "public")
    b.connect("alice")
    b.receive(connected())
    part = frame(type="poke", final=False, reset=True, patch=[])
    assert b.receive(part) is None
    assert events(output(b), "snapshot") == []  # buffered until the final part
    reply = message("r1", "Once", role="assistant", senderId="bot")
    final = frame(
        type="poke",
        cookie=41,
        patch=[{"op": "set", "t": "messages", "k": "r1", "v": reply}],
        bind=[[0, "", "messages", "r1", "text", ""]],
    )
    assert b.receive(final) is None
    assert events(output(b), "snapshot")[0]["reset"] is True
    assert b.receive('[1,1,0," upon"]') is None
    assert b.receive('[2,3,0," a time"]') is None
    out = output(b)
    assert [e["rows"][0][4]["text"] for e in events(out, "snapshot")] == [
        "Once upon",
        "Once upon a time",
    ]
    assert out["results"]["1"]["rows"][0][2]["text"] == "Once upon a time"


def test_a_frame_the_engine_refuses_asks_for_a_new_connection(spec: str) -> None:
    b = Bridge(spec, state())
    b.connect("alice")
    b.receive(connected())
    b.receive(frame(type="poke", cookie=5, reset=True, patch=[]))
    output(b)
    why = b.receive(frame(type="poke", base_cookie=4, cookie=6, patch=[]))
    assert why is not None
    assert "out-of-sequence" in why
    # The rest of that connection's frames are not used, even one that would chain.
    assert b.receive(frame(type="poke", base_cookie=5, cookie=6, patch=[])) is None
    assert events(output(b), "snapshot") == []
    b.disconnected()
    b.connect("alice")
    assert json.loads(output(b)["send"][0])["cookie"] == 5
    assert b.receive(connected()) is None
    assert b.receive('[5,1,0,"x"]') is not None  # no handle on this connection
    b.connect("alice")
    b.receive(connected())
    assert b.receive("not json") is not None


@pytest.mark.parametrize("kind", ["mutation_id_gap", "storage_busy"])
def test_push_errors_ask_for_a_new_connection_and_a_push_again(spec: str, kind: str) -> None:
    b = Bridge(spec, state(cookie=1))
    b.connect("alice")
    b.receive(connected())
    json.loads(b.mutate("sendMessage", json.dumps({"id": "m1", "text": "hi"})))
    assert [json.loads(f)["type"] for f in output(b)["send"]] == ["connect", "push"]
    why = b.receive(frame(type="error", kind=kind, message="try again"))
    assert why is not None
    assert kind in why
    out = output(b)
    assert events(out, "server_error") == [
        {"type": "server_error", "kind": kind, "message": "try again"}
    ]
    b.disconnected()
    b.connect("alice")
    b.receive(connected(0))
    sent = [json.loads(f) for f in output(b)["send"]]
    assert [f["type"] for f in sent] == ["connect", "push"]
    assert [m["id"] for m in sent[1]["mutations"]] == [1]


def test_rejections_carry_kind_and_message(spec: str) -> None:
    b = Bridge(spec, state(cookie=1))
    b.connect("alice")
    b.receive(connected())
    b.mutate("sendMessage", json.dumps({"id": "m1", "text": "hi"}))
    output(b)
    report = {"id": 1, "name": "sendMessage", "kind": "permission_denied", "message": "no"}
    b.receive(frame(type="poke", base_cookie=1, cookie=2, last_mutation_id=1, patch=[],
                    errors=[report]))  # fmt: skip
    out = output(b)
    assert events(out, "rejected") == [{"type": "rejected", **report}]
    assert events(out, "confirmed") == [{"type": "confirmed", "ids": [1]}]


def test_the_server_losing_this_client_s_history_starts_over(spec: str) -> None:
    pending = [[5, "sendMessage", {"id": "m5", "text": "x"}, 1, None]]
    b = Bridge(spec, state(cookie=9, last_mutation_id=4, next_mutation_id=6, pending=pending))
    b.connect("alice")
    why = b.receive(connected(2))
    assert why is not None
    [ev] = events(output(b), "started_over")
    assert ev["old_client_id"] == "c1"
    assert ev["client_id"] != "c1"
    assert ev["renumbered"] == [[5, 1]]
    assert json.loads(b.pending()) == [[1, "sendMessage", {"id": "m5", "text": "x"}, 1, None]]
    b.disconnected()
    b.connect("alice")
    hello = json.loads(output(b)["send"][0])
    assert hello["client_id"] == ev["client_id"]
    assert "cookie" not in hello


def test_actions_go_through_the_engine(spec: str) -> None:
    b = Bridge(spec, state())
    offline = json.loads(b.call_action("callBot", json.dumps({"botName": "bot"})))
    assert offline["ok"] is False
    b.connect("alice")
    b.receive(connected())
    output(b)
    args = {"botName": "bot", "botMessageId": "r1"}
    res = json.loads(b.call_action("callBot", json.dumps(args)))
    assert res["ok"]
    [sent] = [json.loads(f) for f in output(b)["send"]]
    assert sent == {"type": "action", "request_id": res["request_id"], "name": "callBot",
                    "input": args}  # fmt: skip
    result = {"success": True, "response": "hello"}
    b.receive(frame(type="action_result", request_id=res["request_id"], ok=True, output=result))
    assert events(output(b), "action_result") == [
        {
            "type": "action_result",
            "request_id": res["request_id"],
            "ok": True,
            "output": result,
            "kind": None,
            "error": None,
        }
    ]
    bad = json.loads(b.call_action("callBot", json.dumps({"nope": 1})))
    assert bad["ok"] is False


def test_windowed_history_pages_in_through_the_bridge(spec: str) -> None:
    """The chat windows its messages: the engine takes over the shell's knowledge of which
    windows were cut, pages with load_older / page_done, and drops deltas of rows it lacks."""
    msg = {"text": "x", "role": "user", "senderId": "bob"}
    rows = [["", "messages", f"m{i}", "", {**msg, "id": f"m{i}"}] for i in (5, 6)]
    b = Bridge(spec, state(cookie=3, rows=rows, windows_cut=["|messages"]))
    w = b.engine.windows
    assert w is not None
    assert ("", "messages") not in w.complete
    b.connect("alice")
    b.receive(connected())
    # A delta of a message the page does not hold (below its oldest): dropped, no reconnect.
    poke = frame(
        type="poke",
        base_cookie=3,
        cookie=4,
        patch=[{"op": "merge", "t": "messages", "k": "m1", "append": {"text": "!"}}],
    )
    assert b.receive(poke) is None
    start = json.loads(b.load_older("messages", 2, False))
    assert start["ok"]
    rid = start["request_id"]
    sent = [json.loads(f) for f in json.loads(b.take_output())["send"]]
    (query,) = [f for f in sent if f.get("type") == "action"]
    assert query["name"] == "$scan"
    assert query["input"]["before"] == ["", "m5"]
    out = {"rows": [["", f"m{i}", {**msg, "id": f"m{i}"}] for i in (4, 3)], "more": False}
    assert json.loads(b.page_done(rid, json.dumps(out))) == {"added": 2}
    keys = sorted(k.item for k, _, _ in b.engine.snapshot_rows() if k.table == "messages")
    assert keys == ["m3", "m4", "m5", "m6"]
    assert json.loads(b.load_older("messages", 2, False)) == {"ok": True, "done": True}
    # A state from a reset that cut nothing: the table is held whole.
    b2 = Bridge(spec, state(cookie=3, rows=rows, windows_cut=[]))
    assert b2.engine.windows is not None
    assert ("", "messages") in b2.engine.windows.complete
