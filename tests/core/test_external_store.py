"""``ctx.external_store`` reads through a real server: the byte limit applies while reading, so
a read of large rows is refused after a few of them, not after every row up to the row limit
(core/external_store.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.errors import ActionError
from synced_store.storage.sqlite_rows import SqliteReader
from synced_store.testing import create_test_harness

pytestmark = pytest.mark.e2e


class Doc(BaseModel):
    text: str


class Read(BaseModel):
    instance: str
    limit: int | None = None


async def read_docs(ctx: Any, input: Read) -> dict[str, Any]:
    docs = ctx.external_store(input.instance).table("docs")
    rows = await (docs.entries() if input.limit is None else docs.scan(limit=input.limit).entries())
    return {"n": len(rows)}


schema = define_schema(
    schema_version=1,
    tables={"docs": table(Doc)},
    mutators={},
    actions={"readDocs": {"input": Read, "output": dict[str, Any]}},
)
backend = define_backend_config(schema=schema, mutators={}, actions={"readDocs": read_docs})


async def test_a_read_of_large_rows_stops_at_the_byte_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[int] = []
    scan = SqliteReader.scan

    async def spy(self: SqliteReader, *args: Any, **kwargs: Any) -> Any:
        rows = await scan(self, *args, **kwargs)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(SqliteReader, "scan", spy)
    big = "x" * 400_000  # 40 rows of 400 kB: about 3 reach the 1 MiB limit
    async with await create_test_harness(backend, data_dir=tmp_path, instance_id="app") as h:
        await h.seed_instance(
            {"docs": {f"d{i:02d}": {"text": big} for i in range(40)}}, instance_id="big"
        )
        await h.seed_instance(
            {"docs": {f"s{i:04d}": {"text": "s"} for i in range(600)}}, instance_id="small"
        )
        alice = await h.create_client("alice")
        with pytest.raises(ActionError, match=r"bytes.*pass a smaller limit="):
            await alice.action.readDocs(instance="big")
        # Refused after 3 rows read (pages of 1 and 2 rows), not after all 40.
        assert sum(read) == 3
        read.clear()
        # Rows that fit are all read, also across pages, in order and without a duplicate.
        assert await alice.action.readDocs(instance="big", limit=2) == {"n": 2}
        assert await alice.action.readDocs(instance="small") == {"n": 600}
        assert sum(read) == 602
