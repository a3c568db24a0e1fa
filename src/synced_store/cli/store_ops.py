"""``synced-store schema APP`` and ``synced-store mutate``: an app's declarations, and one
mutation through a real client connection.

``schema`` prints the tables (value model as JSON Schema, singleton items, searchable),
the mutators and the actions with their input (and output) JSON Schemas, and the system
tables every instance has. ``mutate`` connects to a running server like any client (the app's
mutator runs optimistically, then on the server) and returns when the server confirmed it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click
from pydantic import TypeAdapter

from ..app_config import ClientConfig
from ..errors import MutationFailedError, SyncedStoreError, UnknownNameError
from ..schema import Schema
from .files import console, echo_json, json_option
from .loading import CliError, load_object

__all__ = ["mutate", "schema"]


def _load_schema(spec: str) -> tuple[Schema, ClientConfig | None]:
    obj = load_object(spec, what="the app")
    if isinstance(obj, ClientConfig):
        return obj.schema, obj
    if isinstance(obj, Schema):
        return obj, None
    raise CliError(f"{spec} is a {type(obj).__name__}, not a BackendConfig, ClientConfig or Schema")


def _json_schema(model: Any) -> dict[str, Any]:
    if model is None:
        return {}  # any JSON value
    try:
        out: dict[str, Any] = TypeAdapter(model).json_schema()
    except Exception as exc:  # a type pydantic cannot describe
        return {"description": f"(no JSON Schema: {exc})"}
    return out


def describe_schema(schema: Schema) -> dict[str, Any]:
    """The declarations of ``schema`` as JSON (what ``synced-store schema --json`` prints)."""
    from ..core.system_tables import SYSTEM_TABLES

    def tables(defs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, t in defs.items():
            entry: dict[str, Any] = {}
            if t.items is not None:
                entry["items"] = {k: _json_schema(i.model) for k, i in t.items.items()}
            else:
                entry["value"] = _json_schema(t.model)
            if t.searchable is not None:
                entry["searchable"] = {
                    "text_field": t.searchable.text_field,
                    "timestamp_field": t.searchable.timestamp_field,
                }
            out[name] = entry
        return out

    return {
        "schema_version": schema.schema_version,
        "tables": tables(schema.tables),
        "mutators": {
            n: {"description": m.description, "input": _json_schema(m.input)}
            for n, m in schema.mutators.items()
        },
        "actions": {
            n: {
                "description": a.description,
                "input": _json_schema(a.input),
                "output": _json_schema(a.output),
            }
            for n, a in schema.actions.items()
        },
        "system_tables": tables(SYSTEM_TABLES),
    }


def _fields(js: dict[str, Any]) -> str:
    props = js.get("properties")
    if not isinstance(props, dict):
        return "any JSON" if not js else str(js.get("type", "…"))
    required = set(js.get("required", ()))
    return ", ".join(f"{k}{'' if k in required else '?'}" for k in props)


@click.command("schema")
@click.argument("app", metavar="MODULE:ATTR")
@json_option
def schema(app: str, as_json: bool) -> None:
    """Print an app's tables, mutators (with their input JSON Schemas) and actions.

    MODULE:ATTR is a BackendConfig, a ClientConfig or a Schema.

    \b
    Example:
        synced-store schema examples.chat:backend
        synced-store schema examples.todo:backend --json
    """
    desc = describe_schema(_load_schema(app)[0])
    if as_json:
        echo_json(desc)
        return
    from rich.table import Table

    out = Table(title=f"{app} (schema version {desc['schema_version']})")
    for col in ("kind", "name", "fields", "description"):
        out.add_column(col)
    for kind in ("tables", "system_tables"):
        for name, t in desc[kind].items():
            fields = _fields(t["value"]) if "value" in t else ", ".join(t["items"])
            note = "searchable" if "searchable" in t else ("read-only" if kind != "tables" else "")
            out.add_row(kind.replace("_", " ")[:-1], name, fields, note)
    for name, m in desc["mutators"].items():
        out.add_row("mutator", name, _fields(m["input"]), m["description"])
    for name, a in desc["actions"].items():
        out.add_row("action", name, _fields(a["input"]), a["description"])
    console().print(out)


async def _mutate(
    url: str,
    config: ClientConfig,
    instance_id: str,
    token: str | None,
    name: str,
    args: Any,
    timeout: float,
) -> str:
    from ..client import connect

    store = await connect(url, config, instance_id=instance_id, token=token)
    try:
        try:
            res = store._mutate(name, args)
        except SyncedStoreError as exc:  # invalid input, or the mutator failed locally
            raise CliError(f"{name}: {exc}") from None
        ended = asyncio.ensure_future(store.wait_until(lambda: False, timeout=timeout))
        done, _ = await asyncio.wait(
            {ended, asyncio.ensure_future(res.confirmed)},
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        ended.cancel()
        if store.end_reason is not None:
            raise CliError(f"the server closed the connection: {store.end_reason}")
        if not done:
            raise CliError(f"no confirmation within {timeout:g}s (is the server at {url}?)")
        try:
            await res.confirmed
        except MutationFailedError as exc:
            raise CliError(f"the server rejected {name}: {exc}") from None
        return res.id if isinstance(res.id, str) else str(res.id)
    finally:
        await store.close()


@click.command("mutate")
@click.option("--url", required=True, help="The server's base URL (ws://host:port or http://).")
@click.option("--instance", "instance_id", required=True, help="The instance id.")
@click.option("--token", default=None, help="The client's token (the dev scheme: the user id).")
@click.option(
    "--app",
    required=True,
    envvar="SYNCED_STORE_APP",
    metavar="MODULE:ATTR",
    help="The app's BackendConfig or ClientConfig (its mutators run on this client first).",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait.")
@click.argument("mutator")
@click.argument("input_json", metavar="JSON", default="{}")
def mutate(
    url: str,
    instance_id: str,
    token: str | None,
    app: str,
    timeout: float,
    mutator: str,
    input_json: str,
) -> None:
    """Run MUTATOR with the JSON input as a client of a running server; wait until confirmed.

    Unknown mutators and invalid input are refused before connecting; a refused connection
    (token, authorization, membership) or a mutation the server rejects ends with an error.

    \b
    Example:
        synced-store mutate --app examples.chat:backend --url ws://127.0.0.1:8000 \\
            --instance room1 --token alice sendMessage '{"id": "m1", "text": "hi"}'
    """
    _, config = _load_schema(app)
    if config is None:
        raise CliError(f"{app} is a Schema; mutate needs a BackendConfig or ClientConfig")
    try:
        config.schema.mutator(mutator)
    except UnknownNameError:
        known = ", ".join(sorted(config.schema.mutators)) or "none"
        raise CliError(f"unknown mutator {mutator!r} (mutators: {known})") from None
    try:
        args = json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise CliError(f"JSON input is not valid JSON: {exc}") from None
    try:
        config.schema.mutator(mutator).input_to_json(args)
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None
    mid = asyncio.run(_mutate(url, config, instance_id, token, mutator, args, timeout))
    click.echo(f"confirmed {mutator} (mutation {mid}) on {instance_id}")
