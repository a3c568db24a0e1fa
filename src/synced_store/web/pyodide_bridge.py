"""The Python side of the page: a thin pump around the sans-I/O :class:`ClientEngine`.

This module runs **inside Pyodide** (it is shipped to the page as ``_synced_store_bridge``). It
imports only the standard library, pydantic, msgspec and the pure parts of ``synced_store``
(never starlette, orjson or the asyncio client). Server frames go to the engine exactly as
they arrived (:meth:`Bridge.receive`); every frame the engine sends and everything it reports
comes back through :meth:`Bridge.take_output`. The bridge builds and parses no wire message:
that is ``synced_store.protocol`` and the engine's job. Everything crosses the JS/Python
boundary as JSON text, and Python never calls back into JS.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from synced_store.app_config import ClientConfig
from synced_store.core.client_engine import ClientEngine, PendingMutation, Subscription
from synced_store.core.context import ReadContext
from synced_store.core.events import (
    ActionCompleted,
    Confirmed,
    EngineEvent,
    MutationRejected,
    ServerError,
    SessionStarted,
    SnapshotUpdated,
    StartedOver,
)
from synced_store.core.keys import private_ns
from synced_store.core.window import PageToken
from synced_store.errors import ProtocolError, SyncedStoreError
from synced_store.schema import Schema
from synced_store.types import RowKey

__all__ = ["Bridge", "load_config"]


def load_config(spec_json: str) -> ClientConfig:
    """Build the client config from the page manifest's ``python`` section.

    ``{"schema": [module, attr], "mutators": {name: [module, attr]}}``: the schema object and
    each mutator handler are looked up in the app's modules shipped to the page.
    """
    spec = json.loads(spec_json)
    mod, attr = spec["schema"]
    schema = getattr(importlib.import_module(mod), attr)
    if not isinstance(schema, Schema):
        raise TypeError(f"{mod}.{attr} is not a synced_store Schema")
    mutators: dict[str, Any] = {}
    for name, (mmod, mattr) in spec["mutators"].items():
        fn: Any = importlib.import_module(mmod)
        for part in mattr.split("."):
            fn = getattr(fn, part)
        mutators[name] = fn
    # Client side: only the schema and the mutators are shipped (no actions, services, hooks).
    return ClientConfig(schema=schema, mutators=mutators)


def _event_json(ev: EngineEvent) -> dict[str, Any]:
    """An engine event as the shell reads it (docs/browser.md, "The bridge")."""
    if isinstance(ev, Confirmed):
        return {"type": "confirmed", "ids": list(ev.mutation_ids)}
    if isinstance(ev, MutationRejected):
        return {
            "type": "rejected",
            "id": ev.mutation_id,
            "name": ev.name,
            "kind": ev.kind,
            "message": ev.message,
        }
    if isinstance(ev, SnapshotUpdated):
        rows = [
            [k.ns, k.table, k.item] if row is None else [k.ns, k.table, k.item, row[0], row[1]]
            for k, row in ev.rows
        ]
        return {
            "type": "snapshot",
            "reset": ev.reset,
            "rows": rows,
            "cookie": ev.cookie,
            "last_mutation_id": ev.last_mutation_id,
        }
    if isinstance(ev, ActionCompleted):
        return {
            "type": "action_result",
            "request_id": ev.request_id,
            "ok": ev.ok,
            "output": ev.output,
            "kind": ev.kind,
            "error": ev.error,
        }
    if isinstance(ev, SessionStarted):
        return {
            "type": "connected",
            "user_id": ev.user_id,
            "client_id": ev.client_id,
            "last_mutation_id": ev.last_mutation_id,
        }
    if isinstance(ev, StartedOver):
        return {
            "type": "started_over",
            "old_client_id": ev.old_client_id,
            "client_id": ev.client_id,
            "renumbered": sorted(ev.renumbered.items()),
        }
    assert isinstance(ev, ServerError)
    return {"type": "server_error", "kind": ev.kind, "message": ev.message}


class Bridge:
    """One page's engine: ``connect``/``receive``/``disconnected`` for the socket, ``mutate``
    and ``call_action`` for the page, table subscriptions, and ``take_output``."""

    def __init__(self, spec_json: str, state_json: str) -> None:
        """``state_json``: what the shell restored from IndexedDB and kept since: ``{user_id,
        client_id, next_mutation_id, cookie, last_mutation_id, rows: [[ns, t, k, sk, v]],
        pending: [[id, name, args, schema_version, dedupe_key]]}`` (the fields the Python
        client persists, storage/client_cache.py)."""
        config = load_config(spec_json)
        st = json.loads(state_json)
        self.engine = ClientEngine(
            config,
            user_id=st["user_id"],
            client_id=st["client_id"],
            next_mutation_id=int(st.get("next_mutation_id") or 1),
        )
        self._subs: dict[int, Subscription] = {}
        self._pages: dict[str, PageToken] = {}
        self._dirty: set[int] = set()
        self._pending_keys: list[list[str]] = []
        self._first: list[bytes] = []
        #: Set when a frame of this connection made the engine raise: the rest of its frames
        #: are not used (the shell is closing it), as the Python client stops reading.
        self._broken: str | None = None
        if st.get("cookie") is not None or st.get("rows") or st.get("pending"):
            self.engine.restore(
                cookie=st.get("cookie"),
                last_mutation_id=int(st.get("last_mutation_id") or 0),
                rows=[(RowKey(r[0], r[1], r[2]), r[3], r[4]) for r in st.get("rows", ())],
                pending=[tuple(p) for p in st.get("pending", ())],
            )
            if st.get("cookie") is not None:
                self.engine.has_server_data = True
        w = self.engine.windows
        cut = st.get("windows_cut")
        if w is not None and isinstance(cut, list) and st.get("cookie") is not None:
            # The shell's receiver knows which windows its last reset cut short: the others
            # hold the whole table (core/window.py).
            own = private_ns(self.engine.user_id)
            short = {tuple(str(c).split("|", 1)) for c in cut}
            w.complete = {(ns, t) for ns in ("", own) for t in w.windows} - short

    def _record(self, m: PendingMutation) -> list[Any]:
        """A pending mutation as the shell stores it (the version it was made under)."""
        v = self.engine.schema.schema_version if m.schema_version is None else m.schema_version
        return [m.id, m.name, m.args, v, m.dedupe_key]

    def pending(self) -> str:
        """The pending mutations the engine kept from the restored state, as the shell stores
        them: ``[[id, name, args, schema_version, dedupe_key], ...]``."""
        return json.dumps([self._record(m) for m in self.engine.pending])

    # -- the connection --------------------------------------------------------------------

    def connect(self, token: str | None) -> None:
        """A socket opened: the engine's ``connect`` frame goes out first (take_output)."""
        self._broken = None
        self._first.append(self.engine.connect_frame(token))

    def disconnected(self) -> None:
        """The socket closed."""
        self.engine.disconnected()

    def receive(self, frame: str) -> str | None:
        """A server frame, exactly as it arrived. Returns why the connection must be made
        again (a malformed or out-of-sequence frame, an error that asks for it, the server
        having lost this client's history), else None."""
        if self._broken is not None:
            return None
        try:
            self.engine.receive(frame)
        except ProtocolError as exc:
            self._broken = str(exc)
            return self._broken
        return None

    # -- the page --------------------------------------------------------------------------

    def mutate(self, name: str, args_json: str, dedupe_key: str | None = None) -> str:
        """Run a mutator optimistically: ``{"ok": true, "mutation": [id, name, args,
        schema_version, dedupe_key], "next_mutation_id"}`` or ``{"ok": false, "error", "kind",
        "type"}`` (invalid input, unknown name, args nested too deep, mutator raised). ``kind``
        is the error's wire kind, as the server would report it (``invalid_input``,
        ``unknown_name``, ``value_too_deep``, ``mutator_error``, ...); ``type`` the Python
        exception's class name."""
        try:
            m = self.engine.mutate(name, json.loads(args_json), dedupe_key=dedupe_key)
        except SyncedStoreError as exc:
            return json.dumps(
                {"ok": False, "kind": exc.kind, "type": type(exc).__name__, "error": str(exc)}
            )
        except Exception as exc:
            return json.dumps(
                {
                    "ok": False,
                    "kind": "mutator_error",
                    "type": type(exc).__name__,
                    "error": f"{type(exc).__name__}: {exc}",
                }
            )
        return json.dumps(
            {
                "ok": True,
                "mutation": self._record(m),
                "next_mutation_id": self.engine.next_mutation_id,
            }
        )

    def call_action(self, name: str, input_json: str) -> str:
        """Call action ``name``: ``{"ok": true, "request_id"}`` (its result arrives as an
        ``action_result`` event) or ``{"ok": false, "error", "kind"}`` (offline, invalid
        input)."""
        if not self.engine.connected:
            msg = f"action {name!r} needs the server and this page is offline"
            return json.dumps({"ok": False, "kind": "offline", "error": msg})
        try:
            args = json.loads(input_json)
            if name.startswith("$"):  # a built-in query of the server, such as "$search"
                rid = self.engine.call_query(name, args)
            else:
                rid = self.engine.call_action(name, args)
        except SyncedStoreError as exc:
            return json.dumps({"ok": False, "kind": exc.kind, "error": str(exc)})
        except Exception as exc:
            return json.dumps({"ok": False, "kind": "invalid_input", "error": str(exc)})
        return json.dumps({"ok": True, "request_id": rid})

    # -- windowed tables (core/window.py) --------------------------------------------------

    def load_older(self, table: str, limit: int, private: bool) -> str:
        """Ask the server for rows of a windowed table older than the oldest held (``$scan``):
        ``{"ok": true, "request_id"}`` (hand its result to :meth:`page_done`), ``{"ok": true,
        "done": true}`` (the table is held from its first row) or ``{"ok": false, "error",
        "kind"}``."""
        w = self.engine.windows
        if w is None or table not in w.windows:
            return json.dumps({"ok": False, "kind": "validation_error", "error": "not windowed"})
        if not self.engine.connected:
            return json.dumps({"ok": False, "kind": "offline", "error": "the page is offline"})
        ns = private_ns(self.engine.user_id) if private else ""
        if (ns, table) in w.complete:
            return json.dumps({"ok": True, "done": True})
        token = w.begin_page(ns, table)
        fl = token.floor
        rid = self.engine.call_query(
            "$scan",
            {
                "table": table,
                "private": private,
                "before": None if fl is None else [fl.sort_key, fl.item_key],
                "limit": max(1, min(500, int(limit))),
            },
        )
        self._pages[rid] = token
        return json.dumps({"ok": True, "request_id": rid})

    def page_done(self, request_id: str, output_json: str) -> str:
        """Add a ``$scan`` result (``null``: it failed): ``{"added": n}``, or ``{"added":
        null}`` when the page must be asked again."""
        w = self.engine.windows
        token = self._pages.pop(request_id, None)
        if w is None or token is None:
            return json.dumps({"added": None})
        try:
            out = json.loads(output_json)
            added = None if out is None else w.apply_page(token, out["rows"], bool(out["more"]))
        finally:
            w.end_page()
        return json.dumps({"added": added})

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe_table(self, sub_id: int, table: str, scope: str) -> None:
        """Watch all rows of ``table`` (``scope``: ``"public"`` or ``"private"``)."""

        async def q(ctx: ReadContext) -> list[tuple[Any, Any]]:
            h = (
                ctx.private_of_user(ctx.user_id).table(table)
                if scope == "private"
                else ctx.table(table)
            )
            return await h.entries()

        def cb(_result: Any) -> None:
            self._dirty.add(sub_id)

        self._subs[sub_id] = self.engine.subscribe(q, cb)
        self._dirty.add(sub_id)

    def unsubscribe(self, sub_id: int) -> None:
        """Stop a subscription."""
        sub = self._subs.pop(sub_id, None)
        if sub is not None:
            self.engine.unsubscribe(sub)
        self._dirty.discard(sub_id)

    # -- output ----------------------------------------------------------------------------

    def take_output(self) -> str:
        """What the shell must do now: ``{"send": [frame texts], "events": [...],
        "results": {sub_id: {"rows": [[key, sort_key, value]]} | {"error"}}, "pending_keys":
        [[ns, t, k]] (absent if unchanged)}``. Events: ``confirmed {ids}``, ``rejected {id,
        name, kind, message}``, ``snapshot {reset, rows: [[ns, t, k, sk, v] | [ns, t, k]],
        cookie, last_mutation_id}`` (to persist), ``action_result {request_id, ok, output,
        kind, error}``, ``connected {user_id, client_id, last_mutation_id}``, ``started_over
        {old_client_id, client_id, renumbered: [[old, new]]}``, ``server_error {kind,
        message}``."""
        frames, self._first = self._first + self.engine.frames_to_send(), []
        out: dict[str, Any] = {
            "send": [f.decode() for f in frames],
            "events": [_event_json(ev) for ev in self.engine.events_received()],
        }
        keys = sorted({(k.ns, k.table, k.item) for m in self.engine.pending for k in m.writes})
        pk = [list(k) for k in keys]
        if pk != self._pending_keys:
            self._pending_keys = pk
            out["pending_keys"] = pk
        if self._dirty:
            results: dict[str, Any] = {}
            for sid in sorted(self._dirty):
                sub = self._subs.get(sid)
                if sub is None:
                    continue
                res = sub.result
                if isinstance(res, Exception):
                    results[str(sid)] = {"error": str(res)}
                else:
                    results[str(sid)] = {"rows": [[ek[1], ek[0], v] for ek, v in res]}
            self._dirty.clear()
            out["results"] = results
        return json.dumps(out)
