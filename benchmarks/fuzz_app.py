"""The backend the frame fuzzer and the soak serve: tests/appdefs.py's app (counters, items,
notes, blobs, the same ten mutators and ``schema_version`` 1) plus one client-callable action,
``echo``, so that ``action`` frames reach real input and output validation and not only the
"unknown action" path. A well-behaved client built on ``appdefs.backend`` syncs with it
unchanged (same tables, mutators and schema version).

Importable as ``benchmarks.fuzz_app:backend`` by a server process with the repository root and
``tests/`` on its ``PYTHONPATH``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

import appdefs  # noqa: E402
from synced_store import define_backend_config, define_schema, table  # noqa: E402

__all__ = ["backend", "schema"]


class EchoIn(BaseModel):
    text: str = Field(max_length=10_000)
    #: ``ok`` echoes; ``raise`` fails in the handler; ``bad_output`` returns an invalid output.
    mode: Literal["ok", "raise", "bad_output"] = "ok"


class EchoOut(BaseModel):
    text: str
    length: int


async def echo(ctx: Any, input: EchoIn) -> Any:
    """Echo the text back (or fail in one of two ways, as asked)."""
    if input.mode == "raise":
        raise ValueError("echo was asked to fail")
    if input.mode == "bad_output":
        return {"text": 1, "length": "many"}
    return {"text": input.text, "length": len(input.text)}


schema = define_schema(
    schema_version=1,
    tables={
        "counters": {"schema": table(appdefs.Counter)},
        "items": table(appdefs.Item),
        "notes": table(appdefs.Note),
        "blobs": table(),
    },
    mutators={
        "increment": {"description": "add amount to a counter", "input": appdefs.Inc},
        "setValue": {"input": appdefs.SetValue},
        "deleteKey": {"input": appdefs.Key},
        "addItem": {"input": appdefs.AddItem},
        "sumInto": {"input": appdefs.SumInto},
        "setNote": {"input": appdefs.NoteIn},
        "serverFails": {"input": appdefs.Key},
        "alwaysFails": {"input": appdefs.Key},
        "setBlob": {"input": appdefs.Blob},
        "markServer": {"input": appdefs.Key},
    },
    actions={"echo": {"description": "echo a text", "input": EchoIn, "output": EchoOut}},
)

backend = define_backend_config(
    schema=schema,
    mutators={
        "increment": appdefs.increment,
        "setValue": appdefs.set_value,
        "deleteKey": appdefs.delete_key,
        "addItem": appdefs.add_item,
        "sumInto": appdefs.sum_into,
        "setNote": appdefs.set_note,
        "serverFails": appdefs.server_fails,
        "alwaysFails": appdefs.always_fails,
        "setBlob": appdefs.set_blob,
        "markServer": appdefs.mark_server,
    },
    actions={"echo": echo},
)
