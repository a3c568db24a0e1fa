"""Retention on a real SQLite instance file: checkpoints turn ages into versions; tombstones,
finished jobs, old clients and their error reports go; the horizon only ever rises; the
per-client error bound; catch-ups read the horizon from the file. Plus ``synced-store
compact`` on a data dir.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from synced_store.cli import cli
from synced_store.storage.sqlite import SqliteInstanceStore, instance_path
from synced_store.types import RowKey

DAY = 86_400.0
AGES = {"tombstones": 7 * DAY, "done_jobs": DAY, "failed_jobs": 30 * DAY, "clients": 90 * DAY}


def tx(store: SqliteInstanceStore, fn: object, *, bump: bool = False) -> object:
    store.begin()
    out = fn(store)  # type: ignore[operator]
    store.commit(store.version + 1 if bump else store.version)
    return out


def put(store: SqliteInstanceStore, item: str) -> None:
    tx(store, lambda s: s.write(RowKey("", "t", item), "", b'{"v":1}', s.version + 1), bump=True)


def delete(store: SqliteInstanceStore, item: str) -> None:
    tx(store, lambda s: s.remove(RowKey("", "t", item), s.version + 1), bump=True)


def tombstones(store: SqliteInstanceStore) -> int:
    return int(store.conn.execute("SELECT COUNT(*) FROM rows WHERE deleted = 1").fetchone()[0])


def compact(store: SqliteInstanceStore, now: float, **over: object) -> object:
    args = {**AGES, **over}
    return tx(store, lambda s: s.compact(now, **args))


def test_tombstones_go_once_a_checkpoint_is_older_than_their_retention(tmp_path: Path) -> None:
    store = SqliteInstanceStore(tmp_path / "i.sqlite3")
    t0 = 1_000_000.0
    put(store, "a")
    put(store, "b")
    delete(store, "a")
    compact(store, t0)  # records (t0, version 3); nothing is 7 days old yet
    assert tombstones(store) == 1
    assert store.horizon == 0
    delete(store, "b")  # version 4, after the checkpoint
    res = compact(store, t0 + 7 * DAY + 1)
    assert res.tombstones == 1  # only the one at or before the checkpoint's version
    assert store.horizon == 3
    assert tombstones(store) == 1
    res = compact(store, t0 + 14 * DAY + 2)
    assert res.tombstones == 1
    assert store.horizon == 4
    store.close()


def test_the_horizon_never_goes_down(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite3"
    store = SqliteInstanceStore(path)
    for i in range(5):
        put(store, f"r{i}")
    other = SqliteInstanceStore(path)  # another process (synced-store compact) raised it
    tx(other, lambda s: s.compact_tombstones(5))
    other.close()
    tx(store, lambda s: s.compact_tombstones(2))  # a stale server-side value
    assert store.horizon == 5
    assert store.conn.execute("SELECT value FROM meta WHERE key='horizon'").fetchone()[0] == 5
    store.close()


def test_a_catch_up_reads_the_horizon_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite3"
    store = SqliteInstanceStore(path)
    put(store, "a")
    put(store, "b")
    delete(store, "a")
    other = SqliteInstanceStore(path)
    tx(other, lambda s: s.compact_tombstones(s.version))  # behind the server's back
    other.close()
    assert store.horizon == 0  # the server's copy is stale
    cu = store.catch_up(1, "alice")
    assert not cu.reset  # decided for good only once it has read the file
    ops = cu.next_part(1 << 20)
    cu.close()
    assert cu.reset, "a cookie older than the horizon must get a reset, not miss a deletion"
    assert [json.loads(op)["k"] for op in ops] == ["b"]
    store.close()


def test_finished_jobs_and_old_clients_go_but_connected_ones_stay(tmp_path: Path) -> None:
    store = SqliteInstanceStore(tmp_path / "i.sqlite3")
    t0 = 2_000_000.0

    def setup(s: SqliteInstanceStore) -> None:
        for status, age in (("done", 2 * DAY), ("done", 0), ("failed", 31 * DAY), ("pending", 99)):
            jid = s.add_job("act", {}, "u", t0)
            s.finish_job(jid, status, now=t0 + 91 * DAY - age)
        for cid in ("old", "connected"):
            s.set_client(cid, "u", 3, s.version)
            s.add_error(cid, {"id": 3, "name": "m", "kind": "k", "message": "no"})

    tx(store, setup)
    compact(store, t0)  # the checkpoint that dates the clients' versions
    put(store, "new")
    tx(store, lambda s: s.set_client("recent", "u", 1, s.version))
    res = compact(store, t0 + 91 * DAY, keep_clients={"connected"})
    assert (res.done_jobs, res.failed_jobs) == (1, 1)
    statuses = sorted(r[0] for r in store.conn.execute("SELECT status FROM jobs"))
    assert statuses == ["done", "pending"]
    assert res.clients == 1
    clients = sorted(r[0] for r in store.conn.execute("SELECT client_id FROM clients"))
    assert clients == ["connected", "recent"]
    assert res.errors == 1  # the forgotten client's report went with it
    store.close()


def test_error_reports_are_bounded_per_client(tmp_path: Path) -> None:
    store = SqliteInstanceStore(tmp_path / "i.sqlite3")

    def flood(s: SqliteInstanceStore) -> None:
        for i in range(1, 301):
            s.add_error("c", {"id": i, "name": "x", "kind": "unknown_name", "message": "?"})
        s.prune_errors("c", 100)

    tx(store, flood)
    ids = [r[0] for r in store.conn.execute("SELECT mutation_id FROM mutation_errors")]
    assert ids == list(range(201, 301))  # the newest 100
    assert [e["id"] for e in store.errors_between("c", 250, 260)] == list(range(251, 261))
    store.close()


def test_registering_a_client_forgets_the_errors_it_was_told(tmp_path: Path) -> None:
    store = SqliteInstanceStore(tmp_path / "i.sqlite3")

    def setup(s: SqliteInstanceStore) -> None:
        s.set_client("c", "alice", 5, 0)
        for i in (2, 4, 5):
            s.add_error("c", {"id": i, "name": "x", "kind": "k", "message": "?"})

    tx(store, setup)
    assert tx(store, lambda s: s.register_client("c", "alice", 4)) == ("alice", 5)
    ids = [r[0] for r in store.conn.execute("SELECT mutation_id FROM mutation_errors")]
    assert ids == [5]
    # Another user's connection with this client id changes nothing.
    assert tx(store, lambda s: s.register_client("c", "mallory", 99)) == ("alice", 5)
    assert [r[0] for r in store.conn.execute("SELECT mutation_id FROM mutation_errors")] == [5]
    store.close()


def test_synced_store_compact_runs_retention_on_a_data_dir(tmp_path: Path) -> None:
    path = instance_path(tmp_path, "room")
    store = SqliteInstanceStore(path)
    for i in range(3):
        put(store, f"r{i}")
    delete(store, "r0")
    delete(store, "r1")
    tx(store, lambda s: s.finish_job(s.add_job("a", {}, "u", 0.0), "done", now=0.0))
    store.close()
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "compact",
            "--data-dir",
            str(tmp_path),
            "--tombstones",
            "0",
            "--done-jobs",
            "0",
            "--vacuum",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.output)
    assert report["instance_id"] == "room"
    assert report["tombstones"] == 2
    assert report["done_jobs"] == 1
    store = SqliteInstanceStore(path)
    assert tombstones(store) == 0
    assert store.horizon == store.version == 5
    live = [r[0] for r in store.conn.execute("SELECT item FROM rows WHERE deleted = 0")]
    assert live == ["r2"]
    assert store.read(RowKey("", "t", "r2")) == ("", {"v": 1})
    store.close()
    bad = runner.invoke(cli, ["compact", "--data-dir", str(tmp_path), "--tombstones", "soon"])
    assert bad.exit_code == 2
    assert "not a duration" in bad.output
