"""The Python side of the page: wraps the sans-I/O :class:`ClientEngine` for the JS shell.

This module runs **inside Pyodide** (it is shipped to the page as ``_synced_store_bridge``). It
imports only the standard library, pydantic and the pure parts of ``synced_store`` (never
starlette, orjson or the asyncio client). Everything crosses the JS/Python boundary as JSON
text, and Python never calls back into JS: every method returns, or queues for
:meth:`Bridge.take_output`, what the shell must do (frames to send, subscription results,
the set of rows pending mutations wrote).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from synced_store.core.client_engine import ClientEngine, Subscription
from synced_store.core.context import ReadContext
from synced_store.errors import SyncedStoreError
from synced_store.protocol.codec import encode
from synced_store.protocol.messages import Connected
from synced_store.schema import BackendConfig, Schema
from synced_store.types import RowKey

__all__ = ["Bridge", "load_config"]


def load_config(spec_json: str) -> BackendConfig:
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
    # Client side: actions and services are ignored, so they are not shipped.
    return BackendConfig(schema=schema, mutators=mutators)


def _key_json(key: RowKey) -> list[str]:
    return [key.ns, key.table, key.item]


class Bridge:
    """One page's engine: ``mutate``, ``receive``, subscriptions over tables."""

    def __init__(self, spec_json: str, state_json: str) -> None:
        """``state_json``: ``{user_id, client_id, next_mutation_id, cookie, last_mutation_id,
        rows: [[ns, t, k, sk, v]], pending: [[id, name, args]]}`` (the shell's mirror)."""
        config = load_config(spec_json)
        st = json.loads(state_json)
        self.engine = ClientEngine(
            config,
            user_id=st["user_id"],
            client_id=st["client_id"],
            next_mutation_id=int(st.get("next_mutation_id") or 1),
        )
        self._subs: dict[int, tuple[Subscription, str, str]] = {}
        self._dirty: set[int] = set()
        self._pending_keys: list[list[str]] = []
        if st.get("cookie") is not None or st.get("rows") or st.get("pending"):
            self.engine.restore(
                cookie=st.get("cookie"),
                last_mutation_id=int(st.get("last_mutation_id") or 0),
                rows=[(RowKey(r[0], r[1], r[2]), r[3], r[4]) for r in st.get("rows", ())],
                pending=[(int(p[0]), str(p[1]), p[2]) for p in st.get("pending", ())],
            )
            if st.get("cookie") is not None:
                self.engine.has_server_data = True

    # -- connection ------------------------------------------------------------------------

    def connect_message(self, token: str) -> str:
        """The ``connect`` frame to send when the socket opens."""
        return self.engine.connect_frame(token).decode()

    def adopt_connection(self, sent_upto: int) -> None:
        """Take over a connection the shell already handshook (it pushed up to ``sent_upto``)."""
        e = self.engine
        e.receive(
            encode(
                Connected(
                    client_id=e.client_id,
                    user_id=e.user_id,
                    last_mutation_id=max(sent_upto, e.last_mutation_id),
                    instance_id="",
                    schema_version=e.schema.schema_version,
                )
            )
        )
        e.events_received()

    def disconnected(self) -> None:
        """The socket closed."""
        self.engine.disconnected()

    def receive(self, frame_json: str) -> None:
        """A complete server frame (``connected``, a final or assembled ``poke``, ...)."""
        self.engine.receive(frame_json)

    # -- writing ---------------------------------------------------------------------------

    def mutate(self, name: str, args_json: str) -> str:
        """Run a mutator optimistically: ``{"ok": true, "id", "args", "next_mutation_id"}`` or
        ``{"ok": false, "error", "kind", "type"}`` (invalid input, unknown name, args nested too
        deep, mutator raised). ``kind`` is the error's wire kind, as the server would report it
        (``invalid_input``, ``unknown_name``, ``value_too_deep``, ``mutator_error``, ...);
        ``type`` the Python exception's class name."""
        try:
            m = self.engine.mutate(name, json.loads(args_json))
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
                "id": m.id,
                "name": m.name,
                "args": m.args,
                "next_mutation_id": self.engine.next_mutation_id,
            }
        )

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

        sub = self.engine.subscribe(q, cb)
        self._subs[sub_id] = (sub, table, scope)
        self._dirty.add(sub_id)

    def unsubscribe(self, sub_id: int) -> None:
        """Stop a subscription."""
        entry = self._subs.pop(sub_id, None)
        if entry is not None:
            self.engine.unsubscribe(entry[0])
        self._dirty.discard(sub_id)

    # -- output ----------------------------------------------------------------------------

    def take_output(self) -> str:
        """What the shell must do now: ``{"send": [frame texts], "results": {sub_id: rows},
        "pending_keys": [[ns, t, k]] | absent if unchanged, "pending": n}``."""
        out: dict[str, Any] = {
            "send": [f.decode() for f in self.engine.frames_to_send()],
            "pending": len(self.engine.pending),
        }
        self.engine.events_received()  # confirmations are tracked by the shell's mirror
        keys = sorted({tuple(_key_json(k)) for m in self.engine.pending for k in m.writes})
        pk = [list(k) for k in keys]
        if pk != self._pending_keys:
            self._pending_keys = pk
            out["pending_keys"] = pk
        if self._dirty:
            results: dict[str, Any] = {}
            for sid in sorted(self._dirty):
                entry = self._subs.get(sid)
                if entry is None:
                    continue
                sub = entry[0]
                res = sub.result
                if isinstance(res, Exception):
                    results[str(sid)] = {"error": str(res)}
                else:
                    results[str(sid)] = {"rows": [[ek[1], ek[0], v] for ek, v in res]}
            self._dirty.clear()
            out["results"] = results
        return json.dumps(out)
