"""``synced-store db upgrade|copy`` and the admin commands on PostgreSQL (``--database``):
a data dir written by the real server is copied into a database, and every command then shows
the same instance there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from synced_store.cli import cli
from synced_store.storage.postgres_schema import STORAGE_VERSION
from synced_store.testing.postgres import temporary_database
from test_cli import REPO, ROOM, data_dir, run, run_json

__all__ = ["data_dir"]  # the fixture, shared with test_cli.py


def _same(dump: dict[str, Any]) -> dict[str, Any]:
    """An inspect dump without what differs between backends (where, size)."""
    return {k: v for k, v in dump.items() if k not in ("path", "bytes")}


async def test_db_upgrade_creates_then_keeps_the_schema() -> None:
    async with temporary_database(schema=False) as dsn:
        first = run("db", "upgrade", dsn).output
        assert f"schema version 0 -> {STORAGE_VERSION}" in first
        assert "up to date" in run("db", "upgrade", dsn).output
        assert "synced_store_test" in first  # the database, never a password


def test_db_upgrade_of_an_unreachable_database_is_a_clean_error() -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade", "postgresql://nobody:secret@127.0.0.1:1/x"])
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert "secret" not in result.output
    assert "Traceback" not in result.output


def test_db_copy_then_inspect_actions_and_compact_on_postgres(data_dir: Path, pg_dsn: str) -> None:
    copied = run_json("db", "copy", "--from-data-dir", data_dir, "--to", pg_dsn)
    assert [
        (c["instance_id"], c["rows"], c["tombstones"], c["clients"], c["jobs"]) for c in copied
    ] == [(ROOM, 10, 1, 2, 3)]
    # The same instance, whichever backend a command reads.
    assert [_same(s) for s in run_json("inspect", "--database", pg_dsn)] == [
        _same(s) for s in run_json("inspect", "--data-dir", data_dir)
    ]
    assert _same(run_json("inspect", "--database", pg_dsn, ROOM)) == _same(
        run_json("inspect", "--data-dir", data_dir, ROOM)
    )
    jobs = run_json("actions", "list", "--database", pg_dsn, ROOM)
    assert [(j["status"], j["attempts"], j["input"]) for j in jobs] == [
        (j["status"], j["attempts"], j["input"])
        for j in run_json("actions", "list", "--data-dir", data_dir, ROOM)
    ]
    assert (
        "re-queued 1 job(s)"
        in run("actions", "retry", "--database", pg_dsn, ROOM, "--all-failed").output
    )
    assert {j["status"] for j in run_json("actions", "list", "--database", pg_dsn, ROOM)} == {
        "pending",
        "done",
    }
    [report] = run_json("compact", "--database", pg_dsn, "--tombstones", "0")
    assert report["tombstones"] == 1
    assert run_json("inspect", "--database", pg_dsn)[0]["tombstones"] == 0
    # Copying again is refused unless asked to replace; the replaced copy is the file's again.
    again = CliRunner().invoke(
        cli, ["db", "copy", "--from-data-dir", str(data_dir), "--to", pg_dsn]
    )
    assert again.exit_code == 1
    assert "--replace" in again.output
    run("db", "copy", "--from-data-dir", data_dir, "--to", pg_dsn, "--replace")
    assert run_json("inspect", "--database", pg_dsn)[0]["tombstones"] == 1


@pytest.mark.parametrize("how", ["both options", "environment"])
def test_data_dir_or_database(
    data_dir: Path, pg_dsn: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "both options":
        result = CliRunner().invoke(
            cli, ["inspect", "--data-dir", str(data_dir), "--database", pg_dsn]
        )
        assert result.exit_code == 2
        assert "not both" in result.output
    else:  # an explicit --data-dir wins over $SYNCED_STORE_DATABASE
        monkeypatch.setenv("SYNCED_STORE_DATABASE", pg_dsn)
        assert [s["instance_id"] for s in run_json("inspect", "--data-dir", data_dir)] == [ROOM]
        assert run_json("inspect") == []  # the (empty) database
    missing = CliRunner().invoke(cli, ["inspect"], env={"SYNCED_STORE_DATABASE": ""})
    assert missing.exit_code == 2
    assert "--data-dir or --database" in missing.output


async def test_serve_refuses_a_database_without_the_schema(tmp_path: Path) -> None:
    async with temporary_database(schema=False) as dsn:
        proc = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "synced_store.cli",
                "serve",
                "examples.todo:backend",
                "--port",
                "0",
                "--database",
                dsn,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
    assert proc.returncode == 1
    assert "has no synced-store schema: run `synced-store db upgrade DSN`" in proc.stderr
    assert "Traceback" not in proc.stderr
