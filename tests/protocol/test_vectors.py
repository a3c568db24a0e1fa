"""The shared protocol vectors (tests/vectors/*.json) against the Python side: the codec and
``ClientEngine.receive``. tests/js/protocol.test.mjs runs the same files against the browser
shell's protocol.js (tests/web/test_protocol_js.py starts it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import define_backend_config, define_migration, define_schema, table
from synced_store.client.store import BACK_OFF_CODES
from synced_store.core.client_engine import ClientEngine
from synced_store.core.events import (
    ActionCompleted,
    MutationRejected,
    ServerError,
    SessionStarted,
    SnapshotUpdated,
    StartedOver,
)
from synced_store.errors import ProtocolError
from synced_store.protocol.codec import encode, frame_json
from synced_store.protocol.codes import (
    END_REASONS,
    RECONNECT_ERROR_KINDS,
    TERMINAL_CODES,
    ErrorKind,
)
from synced_store.protocol.messages import Connected
from synced_store.types import RowKey

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RECEIVE_FILES = sorted(
    p.name for p in VECTORS.glob("*.json") if p.name not in ("close_codes.json", "pushes.json")
)


class Note(BaseModel):
    id: str
    text: str


async def _note(ctx: Any, args: Note) -> None:
    await ctx.table("notes").set(args.id, {"id": args.id, "text": args.text})


def _engine(schema_version: int = 1) -> ClientEngine:
    schema = define_schema(
        schema_version=schema_version,
        tables={"notes": table(Note)},
        mutators={"note": {"description": "a note", "input": Note}},
        migrations={f"{v}to{v + 1}": define_migration() for v in range(1, schema_version)},
    )
    config = define_backend_config(schema=schema, mutators={"note": _note})
    return ClientEngine(config, user_id="alice", client_id="c1", new_client_id=lambda: "c2")


def _cases(name: str) -> list[Any]:
    data = json.loads((VECTORS / name).read_text())
    return [pytest.param(case, id=f"{name[:-5]}: {case['name']}") for case in data["cases"]]


def _rows(engine: ClientEngine) -> list[list[Any]]:
    return sorted(
        ([k.ns, k.table, k.item, sk, v] for k, sk, v in engine.snapshot_rows()),
        key=lambda r: (r[0], r[1], r[2]),
    )


def _state(engine: ClientEngine) -> dict[str, Any]:
    return {
        "cookie": engine.cookie,
        "last_mutation_id": engine.last_mutation_id,
        "rows": _rows(engine),
    }


def _check_state(engine: ClientEngine, want: dict[str, Any], where: str) -> None:
    have = _state(engine)
    for key, value in want.items():
        if key == "rows":
            value = sorted(value, key=lambda r: (r[0], r[1], r[2]))
        assert have[key] == value, f"{where}: {key}"


def _outcome(engine: ClientEngine, frame: str) -> tuple[str, dict[str, Any]]:
    """What the engine did with ``frame``: the vector's ``expect`` and its details."""
    detail: dict[str, Any] = {}
    try:
        engine.receive(frame)
        raised = False
    except ProtocolError:
        raised = True
    events = engine.events_received()
    errors = [e for e in events if isinstance(e, ServerError)]
    if errors:
        detail["server_error"] = {"kind": errors[0].kind, "message": errors[0].message}
    if raised:
        started = any(isinstance(e, StartedOver) for e in events)
        return ("started_over" if started else "reconnect"), detail
    rejected = [
        {"id": e.mutation_id, "name": e.name, "kind": e.kind, "message": e.message}
        for e in events
        if isinstance(e, MutationRejected)
    ]
    for e in events:
        if isinstance(e, SnapshotUpdated):
            return "applied", {"rejected": rejected}
        if isinstance(e, SessionStarted):
            return "connected", {
                "connected": {"user_id": e.user_id, "last_mutation_id": e.last_mutation_id}
            }
        if isinstance(e, ActionCompleted):
            result = {"request_id": e.request_id, "ok": e.ok, "output": e.output}
            return "action_result", {"action_result": {**result, "kind": e.kind, "error": e.error}}
    if errors:
        return "error", detail
    msg = frame_json(frame)
    if isinstance(msg, dict) and msg.get("type") == "push_response":
        return "push_response", detail
    return "buffered", detail


@pytest.mark.parametrize("case", [c for name in RECEIVE_FILES for c in _cases(name)])
def test_receive_vector(case: dict[str, Any]) -> None:
    engine = _engine()
    st = case.get("state", {})
    engine.restore(
        cookie=st.get("cookie"),
        last_mutation_id=st.get("last_mutation_id", 0),
        rows=[(RowKey(ns, t, k), sk, v) for ns, t, k, sk, v in st.get("rows", [])],
        pending=[],
    )
    for i, step in enumerate(case["steps"]):
        where = f"step {i}"
        if step.get("new_connection"):
            engine.disconnected()
            engine.connect_frame(None)
            continue
        if "expect" not in step:
            _check_state(engine, step["state"], where)
            continue
        frame = step["text"] if "text" in step else json.dumps(step["frame"], separators=(",", ":"))
        before = _state(engine)
        expect, detail = _outcome(engine, frame)
        assert expect == step["expect"], f"{where}: {frame[:200]}"
        if expect == "applied":
            assert detail["rejected"] == step.get("rejected", []), where
        for key in ("server_error", "connected", "action_result"):
            if key in step:
                assert detail.get(key) == step[key], f"{where}: {key}"
        if "state" in step:
            _check_state(engine, step["state"], where)
        elif expect in ("reconnect", "buffered", "error", "push_response", "action_result"):
            assert _state(engine) == before, f"{where}: the state changed"


def test_close_codes_and_error_kinds() -> None:
    data = json.loads((VECTORS / "close_codes.json").read_text())
    for c in data["codes"]:
        code = c["code"]
        assert (code in TERMINAL_CODES) == c["terminal"], code
        assert END_REASONS.get(code) == c.get("end_reason"), code  # type: ignore[call-overload]
        assert (code in BACK_OFF_CODES) == c["back_off"], code
    assert set(data["reconnect_error_kinds"]) == RECONNECT_ERROR_KINDS
    kinds = set(data["reconnect_error_kinds"]) | set(data["other_error_kinds"])
    assert kinds == {k.value for k in ErrorKind}
    # Every terminal code of the protocol is in the file.
    assert {c["code"] for c in data["codes"] if c["terminal"]} == set(TERMINAL_CODES)


@pytest.mark.parametrize("case", _cases("pushes.json"))
def test_push_vector(case: dict[str, Any]) -> None:
    data = json.loads((VECTORS / "pushes.json").read_text())
    engine = _engine(data["schema_version"])
    engine.restore(
        cookie=1,
        last_mutation_id=case["last_mutation_id"],
        rows=[],
        pending=[tuple(p) for p in case["pending"]],
    )
    connected = Connected(
        client_id="c1",
        user_id="alice",
        last_mutation_id=case["server_last_mutation_id"],
        instance_id="room",
        schema_version=data["schema_version"],
    )
    engine.receive(encode(connected))
    assert [frame_json(f) for f in engine.frames_to_send()] == case["pushes"]
