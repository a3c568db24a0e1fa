"""How wire messages are represented: msgspec Structs against dicts and frozen dataclasses.

    .venv/bin/python -m benchmarks.codec

The measurement behind protocol/messages.py (docs/topics/design.md, "Wire messages"): decode
a two-mutation push and a ten-row poke, and encode the poke, each way; prints microseconds per
call (minimum of 5 runs of 20,000 calls; CPU-bound, so the minimum is the stable figure).
"""

from __future__ import annotations

import sys
import timeit
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import orjson  # noqa: E402
import pydantic_core  # noqa: E402

from synced_store.protocol.codec import (  # noqa: E402
    decode_client_message,
    decode_server_message,
    encode,
)
from synced_store.protocol.messages import Push  # noqa: E402

PUSH = orjson.dumps(
    {
        "type": "push",
        "mutations": [
            {"id": i, "name": "sendMessage", "args": {"id": f"m{i}", "text": "hello " * 6}}
            for i in (1, 2)
        ],
    }
)
POKE = orjson.dumps(
    {
        "type": "poke",
        "base_cookie": 10,
        "cookie": 11,
        "last_mutation_id": 5,
        "patch": [
            {
                "op": "set",
                "t": "messages",
                "k": f"m{i}",
                "sk": "a0",
                "v": {"id": f"m{i}", "text": "hello world " * 5, "role": "user", "status": "ok"},
            }
            for i in range(10)
        ],
    }
)


def _checked_dicts(data: bytes) -> dict[str, Any]:
    """The pre-typed server path: parse, then check every field by hand (kept as a dict)."""
    msg = pydantic_core.from_json(data, allow_inf_nan=False)
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ValueError("not a message")
    prev = None
    for m in msg["mutations"]:
        v = m.get("id") if isinstance(m, dict) else None
        name = m.get("name") if isinstance(m, dict) else None
        if (
            not isinstance(v, int)
            or isinstance(v, bool)
            or not 1 <= v <= 2**53
            or not isinstance(name, str)
            or not 0 < len(name) <= 64
            or "args" not in m
            or (prev is not None and v != prev + 1)
        ):
            raise ValueError("bad mutation")
        prev = v
    return msg


@dataclass(frozen=True, slots=True)
class _DataclassPoke:
    cookie: int
    base_cookie: int | None
    patch: list[Any]
    last_mutation_id: int | None


def _dataclass_poke(data: bytes) -> _DataclassPoke:
    d = orjson.loads(data)
    return _DataclassPoke(d["cookie"], d.get("base_cookie"), d["patch"], d.get("last_mutation_id"))


_STRUCT_PUSH = msgspec.json.Decoder(Push)


def main() -> None:
    poke = decode_server_message(POKE)
    poke_dict = orjson.loads(POKE)
    cases = [
        ("decode push: pydantic-core + field checks, dicts", lambda: _checked_dicts(PUSH)),
        ("decode push: the server's decoder (that + Structs)", lambda: decode_client_message(PUSH)),
        ("decode push: msgspec typed decode", lambda: _STRUCT_PUSH.decode(PUSH)),
        ("decode poke: orjson.loads to dicts", lambda: orjson.loads(POKE)),
        ("decode poke: orjson + frozen dataclass", lambda: _dataclass_poke(POKE)),
        ("decode poke: msgspec typed (the client's decoder)", lambda: decode_server_message(POKE)),
        ("encode poke: orjson.dumps of dicts", lambda: orjson.dumps(poke_dict)),
        ("encode poke: msgspec Structs", lambda: encode(poke)),
    ]
    n = 20_000
    print("| operation | µs per call |\n| :-- | --: |")
    for name, fn in cases:
        t = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
        print(f"| {name} | {t:.2f} |")


if __name__ == "__main__":
    main()
