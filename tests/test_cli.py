"""The ``synced-store`` command line, on databases written by the real server code."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from synced_store import ConnectionEndedError, define_backend_config, define_schema, table
from synced_store.cli import cli, load_backend
from synced_store.client import connect
from synced_store.server.instance import Instance
from synced_store.storage.sqlite import SqliteInstanceStore, instance_path
from synced_store.testing import create_test_harness, free_port, wait_for_key_exists

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = float(os.environ.get("SYNCED_STORE_TEST_TIMEOUT", "10"))
ROOM = "room1"


# -- a small app with every namespace and an action ----------------------------------------------


class Task(BaseModel):
    id: str
    title: str


class AddTask(BaseModel):
    id: str
    title: str


class TaskId(BaseModel):
    id: str


class Note(BaseModel):
    text: str


class ExportOut(BaseModel):
    ok: bool


schema = define_schema(
    schema_version=1,
    tables={"tasks": table(Task), "notes": table(Note), "audit": table(), "exports": table()},
    mutators={
        "addTask": {"input": AddTask},
        "deleteTask": {"input": TaskId},
        "addNote": {"input": Note},
        "requestExport": {"input": TaskId},
        "markExported": {"input": TaskId},
    },
    actions={"export": {"input": TaskId, "output": ExportOut}},
)


async def add_task(ctx: Any, input: AddTask) -> None:
    await ctx.table("tasks").set(input.id, {"id": input.id, "title": input.title})
    if ctx.is_server:
        await ctx.server_only().table("audit").set(input.id, {"by": ctx.user_id})


async def delete_task(ctx: Any, input: TaskId) -> None:
    await ctx.table("tasks").delete(input.id)


async def add_note(ctx: Any, input: Note) -> None:
    await ctx.private_of_user(ctx.user_id).table("notes").set("note", {"text": input.text})


async def request_export(ctx: Any, input: TaskId) -> None:
    ctx.enqueue_action("export", {"id": input.id})


async def mark_exported(ctx: Any, input: TaskId) -> None:
    await ctx.table("exports").set(input.id, {"id": input.id})


async def export(ctx: Any, input: TaskId) -> dict[str, bool]:
    await ctx.mutate("markExported", {"id": input.id})
    return {"ok": True}


backend = define_backend_config(
    schema=schema,
    mutators={
        "addTask": add_task,
        "deleteTask": delete_task,
        "addNote": add_note,
        "requestExport": request_export,
        "markExported": mark_exported,
    },
    actions={"export": export},
)


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    """A data dir with instance ``room1`` written by the real server and storage code.

    Rows in every namespace, a tombstone, two clients, and three jobs: done (t1), failed (t2)
    and pending with a retry due in an hour (t3).
    """
    d = tmp_path / "data"
    async with await create_test_harness(backend, data_dir=d, instance_id=ROOM) as h:
        alice = await h.create_client(user_id="alice")
        bob = await h.create_client(user_id="bob")
        for i in (1, 2, 3, 4):
            await alice.mutate.addTask(id=f"t{i}", title=f"task {i}")
        await alice.mutate.deleteTask(id="t4")
        await alice.mutate.addNote(text="alice's secret")
        await bob.mutate.addTask(id="b1", title="bob's task")
        await alice.wait_for_sync(TIMEOUT)
        await bob.wait_for_sync(TIMEOUT)
    # Jobs through the instance writer itself (no action runner, so their states stay put).
    inst = Instance(ROOM, SqliteInstanceStore(instance_path(d, ROOM)), backend)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(inst.run())
        for tid in ("t1", "t2", "t3"):
            await inst.mutate("alice", "requestExport", {"id": tid})
        now = time.time()
        jobs = await inst.in_writer(lambda s: s.claim_jobs(now, 10))
        assert [j["input"]["id"] for j in jobs] == ["t1", "t2", "t3"]
        done, failed, later = (j["id"] for j in jobs)
        await inst.in_writer(lambda s: s.finish_job(done, "done", now=now, output={"ok": True}))
        await inst.in_writer(lambda s: s.finish_job(failed, "failed", now=now, error="boom"))
        await inst.in_writer(
            lambda s: s.finish_job(later, "pending", now=now, error="later", next_run_at=now + 3600)
        )
        inst.stop()
    await inst.close()
    return d


def run(*args: str, ok: bool = True) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def run_json(*args: str) -> Any:
    return json.loads(run(*args, "--json").stdout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- help ------------------------------------------------------------------------------------


def _all_commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every command, including those installed packages add through entry points."""
    yield prefix or "synced-store", group
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        path = f"{prefix} {name}".strip()
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, path)
        else:
            yield path, cmd


@pytest.mark.parametrize(("path", "command"), list(_all_commands(cli)))
def test_every_command_has_help_with_an_example(path: str, command: click.Command) -> None:
    assert command.help, f"{path} has no help"
    assert "Example:" in command.help, f"{path}'s help has no Example: block"
    out = run(*[a for a in path.split() if a != "synced-store"], "--help").output
    assert "Example:" in out


def test_expected_commands_exist() -> None:
    names = {p for p, _ in _all_commands(cli)}
    assert {"serve", "inspect", "actions", "actions list", "actions retry"} <= names
    # The example chat app's commands, registered by this project's entry points.
    assert {"demo", "demo chat", "chat"} <= names


def test_a_broken_or_missing_plugin_command_is_a_clean_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib.metadata import EntryPoint

    from synced_store.cli import plugins

    broken = EntryPoint("broken", "no_such_module_here:command", plugins.DEMOS_GROUP)
    real = plugins.entry_points
    monkeypatch.setattr(
        plugins,
        "entry_points",
        lambda group: (
            [*real(group=group), broken] if group == plugins.DEMOS_GROUP else real(group=group)
        ),
    )
    listing = run("demo", "--help").output
    assert "broken" in listing
    assert "chat" in listing  # the others still load
    failed = run("demo", "broken", ok=False)
    assert failed.exit_code == 1
    assert "no_such_module_here" in failed.output
    assert "Traceback" not in failed.output
    missing = run("demo", "nope", ok=False)
    assert missing.exit_code == 2
    assert "No such command 'nope'" in missing.output
    assert "Installed: broken, chat" in missing.output


# -- inspect ---------------------------------------------------------------------------------


def test_inspect_lists_instances(data_dir: Path) -> None:
    (data_dir / "not-an-instance.txt").write_text("ignored")
    [room] = run_json("inspect", "--data-dir", data_dir)
    assert room["instance_id"] == ROOM
    assert room["version"] > 0
    assert room["tables"] == {"audit": 5, "notes": 1, "tasks": 4}
    assert room["rows"] == 10
    assert room["tombstones"] == 1
    assert room["clients"] == 2
    assert room["jobs"] == {"pending": 1, "running": 0, "done": 1, "failed": 1}
    text = run("inspect", "--data-dir", data_dir).output
    assert ROOM in text
    assert "tasks 4" in text


async def test_inspect_dumps_an_instance(data_dir: Path) -> None:
    dump = run_json("inspect", "--data-dir", data_dir, ROOM)
    rows = {(r["namespace"], r["table"], r["item_key"]): r for r in dump["rows"]}
    assert rows[("public", "tasks", "t1")]["value"] == {"id": "t1", "title": "task 1"}
    assert ("public", "tasks", "t4") not in rows  # deleted: a tombstone, not a row
    assert rows[("user:alice", "notes", "note")]["value"] == {"text": "alice's secret"}
    assert rows[("server-only", "audit", "b1")]["value"] == {"by": "bob"}
    assert {c["user_id"]: c["last_mutation_id"] for c in dump["clients"]} == {"alice": 6, "bob": 1}
    assert dump["jobs"]["failed"] == 1
    only = run_json("inspect", "--data-dir", data_dir, ROOM, "--table", "tasks")
    assert {r["table"] for r in only["rows"]} == {"tasks"}
    assert only["row_count"] == 4
    text = run("inspect", "--data-dir", data_dir, ROOM).output
    for word in ("user:alice", "server-only", "task 1", "last_mutation_id", "failed 1"):
        assert word in text


def test_inspect_is_read_only(data_dir: Path) -> None:
    db = instance_path(data_dir, ROOM)
    before = _digest(db)
    run("inspect", "--data-dir", data_dir)
    run("inspect", "--data-dir", data_dir, ROOM)
    run("actions", "list", "--data-dir", data_dir, ROOM)
    assert _digest(db) == before
    assert sorted(p.name for p in data_dir.glob("*.sqlite3")) == [f"{ROOM}.sqlite3"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "--data-dir", "{missing}"], "does not exist"),
        (["inspect", "--data-dir", "{data}", "nope"], "no instance 'nope'"),
        (["inspect", "--data-dir", "{data}", "../etc"], "invalid instance id"),
        (["inspect", "--data-dir", "{data}", "--table", "tasks"], "--table needs an INSTANCE"),
        (["actions", "list", "--data-dir", "{data}", "nope"], "no instance 'nope'"),
        (["actions", "retry", "--data-dir", "{data}", ROOM, "999"], "has no job 999"),
    ],
)
def test_user_errors_are_clean(data_dir: Path, args: list[str], message: str) -> None:
    argv = [a.format(data=data_dir, missing=data_dir / "missing") for a in args]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (data_dir / "nope.sqlite3").exists()


def test_inspect_empty_data_dir(tmp_path: Path) -> None:
    assert run_json("inspect", "--data-dir", tmp_path) == []
    assert "no instances" in run("inspect", "--data-dir", tmp_path).output


# -- actions ---------------------------------------------------------------------------------


def test_actions_list(data_dir: Path) -> None:
    jobs = run_json("actions", "list", "--data-dir", data_dir, ROOM)
    assert [(j["input"]["id"], j["status"]) for j in jobs] == [
        ("t1", "done"),
        ("t2", "failed"),
        ("t3", "pending"),
    ]
    assert jobs[0]["output"] == {"ok": True}
    assert jobs[1]["last_error"] == "boom"
    assert all(j["name"] == "export" and j["user_id"] == "alice" for j in jobs)
    failed = run_json("actions", "list", "--data-dir", data_dir, ROOM, "--status", "failed")
    assert [j["input"]["id"] for j in failed] == ["t2"]
    text = run("actions", "list", "--data-dir", data_dir, ROOM).output
    assert "boom" in text
    assert "export" in text


def test_actions_retry_by_id_and_all_failed(data_dir: Path) -> None:
    jobs = {j["input"]["id"]: j for j in run_json("actions", "list", "--data-dir", data_dir, ROOM)}
    done, failed, later = jobs["t1"]["id"], jobs["t2"]["id"], jobs["t3"]["id"]

    refused = run("actions", "retry", "--data-dir", data_dir, ROOM, str(done), ok=False)
    assert refused.exit_code == 1
    assert "is done" in refused.output

    out = run("actions", "retry", "--data-dir", data_dir, ROOM, str(later)).output
    assert f"re-queued 1 job(s) of {ROOM}: {later}" in out
    out = run("actions", "retry", "--data-dir", data_dir, ROOM, "--all-failed").output
    assert f"re-queued 1 job(s) of {ROOM}: {failed}" in out
    assert (
        "no failed jobs"
        in run("actions", "retry", "--data-dir", data_dir, ROOM, "--all-failed").output
    )

    after = {j["id"]: j for j in run_json("actions", "list", "--data-dir", data_dir, ROOM)}
    for jid in (failed, later):
        assert after[jid]["status"] == "pending"
        assert after[jid]["attempts"] == 0
        assert after[jid]["next_run_at"] == 0
    assert after[done]["status"] == "done"


@pytest.mark.parametrize("extra", [[], ["1", "--all-failed"]])
def test_actions_retry_needs_ids_or_all_failed(data_dir: Path, extra: list[str]) -> None:
    result = CliRunner().invoke(
        cli, ["actions", "retry", "--data-dir", str(data_dir), ROOM, *extra]
    )
    assert result.exit_code == 2
    assert "JOB_ID(s) or --all-failed" in result.output


async def test_running_server_runs_a_retried_job(data_dir: Path) -> None:
    async with await create_test_harness(backend, data_dir=data_dir, instance_id=ROOM) as h:
        alice = await h.create_client(user_id="alice")  # opens the instance on the server
        # The pending job (t3) is due in an hour and the failed one (t2) never runs by itself.
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["actions", "retry", "--data-dir", str(data_dir), ROOM, "--all-failed"],
        )
        assert result.exit_code == 0, result.output
        assert await wait_for_key_exists(alice, table="exports", key="t2", timeout=TIMEOUT) == {
            "id": "t2"
        }
        assert await alice.query(lambda ctx: ctx.table("exports").has("t3")) is False


# -- serve -----------------------------------------------------------------------------------


def test_load_backend_accepts_modules_files_and_package_dirs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    from examples.todo import backend as todo

    assert load_backend("examples.todo:backend") is todo
    assert load_backend("examples.todo.app:backend") is todo
    assert load_backend("examples/todo/app.py:backend") is todo
    assert load_backend("examples/todo:backend") is todo


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("examples.todo", "MODULE:ATTR"),
        ("no_such_module_xyz:backend", "no module named 'no_such_module_xyz'"),
        ("examples.todo:nope", "has no attribute 'nope'"),
        ("examples.todo:Todo", "not a BackendConfig"),
        ("examples/todo/missing.py:backend", "no such file"),
    ],
)
def test_serve_reports_bad_apps(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, spec: str, message: str
) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(cli, ["serve", spec, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("examples.todo:nope", "has no attribute 'nope'"),
        ("examples.todo.app:SCHEMA_VERSION", "not callable"),
    ],
)
def test_serve_reports_a_bad_authenticator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, auth: str, message: str
) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(
        cli, ["serve", "examples.todo:backend", "--auth", auth, "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert message in result.output


def test_serve_reports_a_busy_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(REPO)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            ["serve", "examples.todo:backend", "--port", str(port), "--data-dir", str(tmp_path)],
        )
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


async def _wait_for_port(proc: asyncio.subprocess.Process, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.returncode is None, f"serve exited with {proc.returncode}"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout}s") from None
            await asyncio.sleep(0.05)  # bounded readiness polling of the child process
        else:
            writer.close()
            await writer.wait_closed()
            return


@pytest.mark.e2e
async def test_serve_subprocess_syncs_clients(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    from examples.todo import backend as todo

    port = free_port()
    data = tmp_path / "todo-data"
    log = tmp_path / "serve.log"
    script = Path(sys.executable).parent / "synced-store"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "synced_store.cli"]
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "serve",
            "examples/todo/app.py:backend",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await _wait_for_port(proc, port, 30)
        url = f"ws://127.0.0.1:{port}"
        alice = await connect(url, todo, instance_id="list1", token="alice")
        bob = await connect(url, todo, instance_id="list1", token="bob")
        try:
            await alice.wait_for_server_data(TIMEOUT)
            await bob.wait_for_server_data(TIMEOUT)
            res = await alice.mutate.addTodo(id="a1", text="milk")
            await asyncio.wait_for(res.confirmed, TIMEOUT)
            seen = await wait_for_key_exists(bob, table="todos", key="a1", timeout=TIMEOUT)
            assert seen["text"] == "milk"
        finally:
            await alice.close()
            await bob.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # stop by PID, gracefully
        code = await asyncio.wait_for(proc.wait(), 30)
    output = log.read_text()
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells.
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert f"ws://127.0.0.1:{port}" in output
    assert "/sync/<instance_id>" in output
    assert "Traceback" not in output
    [room] = run_json("inspect", "--data-dir", data)
    assert room["instance_id"] == "list1"
    assert room["tables"]["todos"] == 1
    assert room["clients"] == 2  # both connected: a client id is bound at its first connect


def test_inspect_lists_an_unreadable_file_with_its_error(data_dir: Path) -> None:
    (data_dir / "broken.sqlite3").write_text("not a database")
    listed = {s["instance_id"]: s for s in run_json("inspect", "--data-dir", data_dir)}
    assert "file is not a database" in listed["broken"]["error"]
    assert listed[ROOM]["rows"] == 10
    result = run("inspect", "--data-dir", data_dir, "broken", ok=False)
    assert result.exit_code == 1
    assert "file is not a database" in result.output


@pytest.mark.parametrize(
    "path", [p for p, c in _all_commands(cli) if not isinstance(c, click.Group)]
)
def test_commands_are_documented(path: str) -> None:
    docs = (REPO / "docs" / "operations.md").read_text()
    assert f"synced-store {path}" in docs, f"docs/operations.md does not show `{path}`"


def test_serve_refuses_dev_auth_on_a_public_interface(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(REPO)
    args = ["serve", "examples.todo:backend", "--host", "0.0.0.0", "--port", "0"]
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "INSECURE development authentication" in result.output
    assert "--insecure-dev-auth" in result.output
    short = tmp_path / "short.key"
    short.write_text("too short")
    result = CliRunner().invoke(cli, [*args, "--jwt-secret-file", str(short)])
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert "Traceback" not in result.output


async def test_serve_with_a_jwt_secret_accepts_signed_tokens_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synced_store.server import mint_token

    monkeypatch.syspath_prepend(str(REPO))
    from examples.todo import backend as todo

    secret = tmp_path / "secret.key"
    secret.write_bytes(b"s" * 40)
    port = free_port()
    script = Path(sys.executable).parent / "synced-store"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "synced_store.cli"]
    with (tmp_path / "serve.log").open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "serve",
            "examples.todo:backend",
            "--host",
            "0.0.0.0",  # allowed: tokens are verified
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
            "--jwt-secret-file",
            str(secret),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await _wait_for_port(proc, port, 30)
        url = f"ws://127.0.0.1:{port}"
        good = await connect(url, todo, instance_id="l1", token=mint_token(b"s" * 40, "alice"))
        try:
            await good.wait_for_server_data(TIMEOUT)
            assert good.user_id == "alice"
        finally:
            await good.close()
        bad = await connect(url, todo, instance_id="l2", token="alice")  # the dev token
        try:
            with pytest.raises(ConnectionEndedError):
                await bad.wait_for_server_data(TIMEOUT)
            assert bad.end_reason == "auth_failed"
        finally:
            await bad.close()
        assert not (tmp_path / "data" / "l2.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
