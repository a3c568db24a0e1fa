"""The state enums are their strings: public attributes, JSON, SQLite and click see plain text."""

from __future__ import annotations

import json
import sqlite3

import orjson

from synced_store.cli.files import JOB_STATUSES
from synced_store.types import ConnectionStatus, JobStatus


def test_connection_statuses_are_the_documented_strings() -> None:
    assert [s.value for s in ConnectionStatus] == ["disconnected", "connecting", "connected"]
    assert ConnectionStatus.CONNECTED == "connected"
    assert f"{ConnectionStatus.CONNECTING}" == str(ConnectionStatus.CONNECTING) == "connecting"


def test_job_statuses_are_the_stored_strings() -> None:
    assert [s.value for s in JobStatus] == ["pending", "running", "done", "failed"]
    assert JOB_STATUSES == ("pending", "running", "done", "failed")  # `--status` choices
    assert json.dumps({"status": JobStatus.DONE}) == '{"status": "done"}'
    assert orjson.loads(orjson.dumps(JobStatus.FAILED)) == "failed"
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE jobs (status TEXT)")
    conn.execute("INSERT INTO jobs VALUES (?)", (JobStatus.PENDING,))
    assert conn.execute("SELECT status, typeof(status) FROM jobs").fetchone() == ("pending", "text")
    conn.close()
