"""The frame fuzzer (benchmarks/fuzz_frames.py), briefly, against live server processes on
127.0.0.1: a few thousand hypothesis-generated hostile frames while two well-behaved clients
keep writing. The full run (100,000 frames) is ``python -m benchmarks.fuzz_frames``; its
figures are in docs/security.md, "Fuzzing and soak".

The last tests reproduce what the fuzzer found (docs/security.md, "Fuzzing and soak"), now
fixed: numbers a value may not hold, non-JSON literals, non-UTF-8 text frames.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from benchmarks.fuzz_frames import ALLOWED_CLOSE_CODES, OVERSIZE_LABELS, run_fuzz
from benchmarks.live_server import start_server

from rawws import frames_until_close, hello, raw, until

pytestmark = pytest.mark.e2e
SEED = int(os.environ.get("FUZZ_SEED", "20261204"))
FRAMES = int(os.environ.get("FUZZ_FRAMES", "3000"))


@pytest.mark.parametrize("stack", ["serve", "testing", "postgres"])
async def test_hostile_frames_leave_the_server_and_other_clients_intact(stack: str) -> None:
    r = await run_fuzz(
        FRAMES, SEED, stack=stack, workers=4, quiet=True, limits={"handshake_timeout": 3.0}
    )
    st, v = r["stats"], r["verdict"]
    assert st["frames"] >= FRAMES
    assert st["connections"] > FRAMES // 20
    assert v["crashes"] == 0, st["crashes"]
    codes = {int(c) for c in st["close_codes"]}
    assert codes <= ALLOWED_CLOSE_CODES | {1006}, st["close_codes"]
    for label, by_code in st["codes_by_label"].items():
        assert "1006" not in by_code or label in OVERSIZE_LABELS, (label, by_code)
    assert codes & {4003, 4004}, "the fuzzer should have been refused many times"
    assert v["mismatches"] == 0, st["mismatch_samples"][:5]
    # The server's per-user limits (1008) are not what the fuzzer tests: it spreads its
    # connections over users so that they are (almost) never hit.
    assert sum(st["rate_limited"].values()) <= st["connections"] // 100, st["rate_limited"]
    assert st["unparseable_frames"] == 0
    assert st["non_json_frames"] == 0, st["non_json_samples"]
    # Numbers past what a value may hold were sent, in frames and in values, and judged.
    assert st["literal_frames"] > 0, st["frames_by_label"]
    assert st["frames_by_label"].get("push-numbers", 0) > 0, st["frames_by_label"]
    judged = st["outcomes_checked"]
    assert sum(judged.values()) > FRAMES // 10, judged
    assert any(rule.startswith("own: ") for rule in judged), judged
    assert "invalid_input" in st["mutation_error_kinds"], st["mutation_error_kinds"]
    # Every instance, read back as a new client sees it, is strict JSON (no NaN, Infinity or
    # integer outside 64 bits), and so is what the verifying clients received.
    rb = r["read_back"]
    assert rb["frames"] > 0, rb
    assert (rb["problems"], rb["failed"]) == (0, []), rb
    for g in r["good_clients"]:
        assert g["confirmed"] > 0, g
        assert g["confirmed"] == g["issued"], g
        assert (g["unconfirmed"], g["failed"]) == (0, 0), g
        assert (g["missing_on_server"], g["missing_locally"]) == (0, 0), g
        assert (g["disconnects"], g["connects"], g["ended"]) == ([], 1, None), g
    assert v["good_data_intact"]


# -- what the fuzzer found ---------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Any:
    server = start_server(
        "serve", "benchmarks.fuzz_app:backend", tmp_path / "data", tmp_path / "server.log"
    )
    yield server
    server.kill()


def push(text_args: str, id_: int = 1) -> str:
    head = '{"type":"push","mutations":[{"id":' + str(id_)
    return head + ',"name":"setBlob","args":{"key":"n","data":' + text_args + "}}]}"


async def push_and_collect(url: str, instance: str, frame: str) -> tuple[list[Any], int]:
    """Push one frame from a raw client; the rejected-mutation reports and the confirmed
    last_mutation_id."""
    ws = await raw(url, instance)
    await ws.send(hello(client_id="pusher"))
    await until(ws, "connected")
    await ws.send(frame)
    errors: list[Any] = []
    lmid = 0
    async with asyncio.timeout(5):
        while lmid < 1:
            msg = json.loads(await ws.recv())
            if isinstance(msg, dict) and msg.get("type") == "poke":
                errors += msg.get("errors", [])
                lmid = msg.get("last_mutation_id", lmid)
    await ws.close()
    return errors, lmid


async def push_and_wait(url: str, instance: str, frame: str) -> int | None:
    """Push one frame from a raw client; the close code if the server closed, else None."""
    ws = await raw(url, instance)
    await ws.send(hello(client_id="pusher"))
    await until(ws, "connected")
    await ws.send(frame)
    try:
        await until(ws, "push_response", timeout=5)
    except websockets.ConnectionClosed:
        return ws.close_code
    await ws.close()
    return None


async def test_a_huge_integer_in_a_value_is_refused_and_its_instance_stays_up(live: Any) -> None:
    """It used to be committed, then fail the fan-out's encoding: the instance went down."""
    errors, lmid = await push_and_collect(live.url, "big-int", push(str(10**30)))
    assert lmid == 1
    assert [e["kind"] for e in errors] == ["invalid_input"]
    assert "64 bits" in errors[0]["message"]
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"http://127.0.0.1:{live.port}/healthz", timeout=5)).json()
    assert health["failed_instances"] == {}, health


async def test_non_finite_numbers_never_reach_the_wire(live: Any) -> None:
    """NaN / Infinity used to be stored as such, and every later catch-up was not JSON."""
    for i, literal in enumerate(("NaN", "Infinity", "-Infinity")):  # not JSON: the frame is bad
        ws = await raw(live.url, f"nan-{i}")
        await ws.send(hello(client_id="pusher"))
        await until(ws, "connected")
        await ws.send(push(literal))
        frames, code = await frames_until_close(ws)
        assert code == 4003
        assert "JSON" in frames[-1]["message"]
    # 1e400 is JSON, but overflows to infinity: refused as a value, nothing stored.
    errors, _ = await push_and_collect(live.url, "overflow", push("1e400"))
    assert [e["kind"] for e in errors] == ["invalid_input"]
    ws = await raw(live.url, "overflow")
    await ws.send(hello(client_id="reader"))
    async with asyncio.timeout(5):
        while '"final":true' not in (text := str(await ws.recv())):
            pass
    await ws.close()
    assert "blobs" not in text
    orjson.loads(text)  # RFC 8259 JSON, as a browser's JSON.parse needs


async def test_a_text_frame_that_is_not_utf8_is_refused_without_a_traceback(
    live: Any, tmp_path: Path
) -> None:
    ws = await raw(live.url, "utf8")
    await ws.send(hello(client_id="bad-text"))
    await until(ws, "connected")
    await ws.send(b'{"type":"pull","x":"\xff"}', text=True)
    with pytest.raises(websockets.ConnectionClosed):
        await until(ws, "never")
    assert ws.close_code == 1007
    log = (tmp_path / "server.log").read_text()  # warnings and errors only
    assert "Traceback" not in log, json.dumps(log[:500])
    assert "UTF-8" not in log


async def test_a_refused_origin_is_not_logged_as_a_server_error(live: Any, tmp_path: Path) -> None:
    with pytest.raises(websockets.InvalidStatus):
        await raw(live.url, "o", origin="https://evil.example")
    ws = await raw(live.url, "o")  # the server goes on; its log shows no error for it
    await ws.send(hello(client_id="after"))
    await until(ws, "connected")
    await ws.close()
    assert "ERROR" not in (tmp_path / "server.log").read_text()
