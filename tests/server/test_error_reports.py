"""Rejected-mutation reports reach a connected client once each, with the confirmation of
their mutations — also when more of them fail than the database keeps per client
(``Retention.errors_per_client``: the newest 100) and a catch-up (a ``pull``) runs while
the fan-out holds their commits in a streamed row's window."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from rawws import hello, raw
from synced_store.testing import TestHarness

PUSHES = 8
PER_PUSH = 40  # every other one fails: 160 reports, more than the 100 the database keeps


async def _push_with_pulls(ws: Any) -> int:
    mid = 0
    for r in range(PUSHES):
        mutations = []
        for k in range(PER_PUSH):
            mid += 1
            name, args = ("noSuchMutator", {}) if k % 2 else ("increment", {"key": "k"})
            mutations.append({"id": mid, "name": name, "args": args})
        await ws.send(json.dumps({"type": "push", "mutations": mutations}))
        if r % 3 == 1:
            await ws.send(json.dumps({"type": "pull"}))
    return mid


async def test_every_report_arrives_once_with_its_confirmation(harness: TestHarness) -> None:
    for attempt in range(5):  # the race depends on timing: try it a few times
        ws = await raw(harness.url, f"errors-{attempt}")
        await ws.send(hello(client_id=f"c{attempt}"))
        last = await _push_with_pulls(ws)
        reports: list[int] = []
        confirmed = 0
        async with asyncio.timeout(10):
            while confirmed < last:
                msg = json.loads(await ws.recv())
                if msg.get("type") == "poke":
                    reports += [e["id"] for e in msg.get("errors") or ()]
                    confirmed = max(confirmed, msg.get("last_mutation_id") or 0)
        await ws.close()
        failed = [i for i in range(1, last + 1) if i % 2 == 0]
        assert sorted(set(reports)) == failed, f"attempt {attempt}: reports missing"
        assert len(reports) == len(set(reports)), f"attempt {attempt}: a report twice"
