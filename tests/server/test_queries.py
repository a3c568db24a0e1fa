"""Built-in queries: ``$`` names travel as action frames and need no app action."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import ActionError, define_backend_config, define_schema, table
from synced_store.server import queries
from synced_store.testing import create_test_harness

pytestmark = pytest.mark.e2e


class Row(BaseModel):
    n: int


schema = define_schema(1, tables={"rows": table(Row)}, mutators={})
backend = define_backend_config(schema, {})  # no actions at all


@queries.register("$test_whoami")
async def _whoami(inst: Any, session: Any, input: Any) -> Any:
    if input == "fail":
        raise ActionError("refused on purpose")
    return {"user": session.user_id, "instance": inst.instance_id, "echo": input}


async def test_a_query_answers_without_app_actions(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        out = await c._query("$test_whoami", {"x": [1, 2]})
        assert out == {"user": "alice", "instance": "test", "echo": {"x": [1, 2]}}
        with pytest.raises(ActionError, match="refused on purpose"):
            await c._query("$test_whoami", "fail")
        with pytest.raises(ActionError, match="unknown query"):
            await c._query("$nope", None)


def test_query_names_start_with_a_dollar() -> None:
    with pytest.raises(ValueError, match="starts with"):
        queries.register("plain")
    assert queries.is_query("$x")
    assert not queries.is_query("x")
