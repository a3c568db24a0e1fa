// synced-store browser shell: WebSocket transport, IndexedDB persistence, and the page API.
//
// Two phases (docs/browser.md):
//
// 1. Until the Python engine is ready, the shell is a read-only cache of the server snapshot
//    for first paint: it restores the snapshot and the pending mutations from IndexedDB,
//    renders them, receives frames through protocol.js (the same checks as the Python engine:
//    append frames, multi-part pokes, base_cookie sequencing, error kinds) and sends mutations
//    to the server non-optimistically.
// 2. Once Pyodide is ready, the sans-I/O Python ClientEngine (the same code as the Python client,
//    running the app's Python mutators) takes over: the shell hands it the cache, reconnects,
//    and from then on feeds it every frame raw, exactly as it arrived. Mutations apply at once,
//    server updates rebase pending work, subscription results come from the engine, and the
//    shell only persists what the engine reports (snapshot updates, pending mutations).
//
// Plain ES module, no dependencies.

import {
  idbAll, idbDelete, idbPut, makeRecord, openDb, randomId, readRecord, recordPrefix, tryLock,
} from "./persist.js";
import {
  ProtocolError, Receiver, actionFrame, closeAction, connectFrame, pushFrames, rowKey,
} from "./protocol.js";

// After a 1008 or 1013 close (over a rate limit or too slow to read; the server at capacity)
// the shell waits at least RETRY_LATER_MS, and the backoff keeps growing until a connection
// stays up for STABLE_MS.
const RETRY_LATER_MS = 1000;
const STABLE_MS = 10000;
// Close codes the shell sends (never the server): it could not use a frame and reconnects;
// the Python engine takes over the connection.
const CLOSE_RECONNECT = 4997;
const CLOSE_HANDOVER = 4996;
// How deep arrays and objects may nest in a JSON value (mutation args, action input). The
// same number as MAX_VALUE_DEPTH in synced_store/core/keys.py, which the server enforces
// (tests/web/test_value_depth_browser.py checks that the two agree); a page config may pass
// it as `maxValueDepth`.
const MAX_VALUE_DEPTH = 32;

const cmpStr = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const utf8 = new TextDecoder("utf-8", { fatal: true });

// Throw (kind "value_too_deep", the message of synced_store.core.keys.check_depth) if arrays
// and objects nest more than `limit` levels deep in `value`: a scalar has depth 0, [1] and
// {"a": 1} depth 1. Depth first, without recursion; an object with toJSON (a Date) is a leaf.
export function checkDepth(value, limit = MAX_VALUE_DEPTH, what = "value") {
  const container = (v) => v !== null && typeof v === "object" && typeof v.toJSON !== "function";
  if (!container(value)) return;
  const tooDeep = () => Object.assign(
    new Error(`${what} nests more than ${limit} levels of arrays/objects`), { kind: "value_too_deep" });
  if (limit < 1) throw tooDeep();
  const members = (v) => (Array.isArray(v) ? v : Object.values(v));
  const stack = [members(value)];
  const at = [0];
  while (stack.length) {
    const top = stack.length - 1;
    const list = stack[top];
    let i = at[top];
    while (i < list.length && !container(list[i])) i++;
    if (i === list.length) { stack.pop(); at.pop(); continue; }
    if (stack.length >= limit) throw tooDeep();
    at[top] = i + 1;
    stack.push(members(list[i]));
    at.push(0);
  }
}

// -- the engine worker -----------------------------------------------------------------------

// Calls into the Python engine running in engine-worker.js; answers arrive in call order. Each
// answer carries the bridge's output, handed to `onOutput(output, ws)` before the call settles,
// with the socket that was current when the call was made (its frames belong to it).
class EngineWorker {
  constructor(onOutput, log) {
    this.worker = new Worker(new URL("./engine-worker.js", import.meta.url), { type: "module" });
    this.calls = new Map();
    this.nextId = 1;
    this.onOutput = onOutput;
    this.socket = () => null;
    this.worker.onmessage = (e) => this._onMessage(e.data);
    this.worker.onerror = (e) => {
      log("engine", `worker error: ${e.message}`);
      for (const c of this.calls.values()) c.reject(new Error(`engine worker failed: ${e.message}`));
      this.calls.clear();
    };
  }

  call(method, ...args) {
    const id = this.nextId++;
    const ws = this.socket();
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject, ws });
      this.worker.postMessage({ id, method, args });
    });
  }

  _onMessage(m) {
    if (m.progress) { performance.mark(m.progress); return; }
    const c = this.calls.get(m.id);
    if (m.output) this.onOutput(m.output, c ? c.ws : null);
    if (!c) return;
    this.calls.delete(m.id);
    if (m.error !== undefined) c.reject(new Error(m.error));
    else c.resolve(m.result);
  }
}

// -- the store -------------------------------------------------------------------------------

export class SyncedStore {
  /**
   * @param {object} config the page config the server inlined (schemaVersion, pyodide, ...)
   * @param {{instanceId: string, token: string, userId?: string, reconnectMax?: number}} opts
   */
  constructor(config, opts) {
    this.config = config;
    this.instanceId = opts.instanceId;
    this.token = opts.token;
    this.userId = opts.userId || opts.token;
    this.reconnectMax = opts.reconnectMax ?? 3000;
    this.status = "disconnected"; // connecting | connected | disconnected | ended
    this.endReason = null;
    this.optimistic = false; // true once the Python engine runs the mutators in the page
    this.engineError = null;
    this.hasServerData = false;
    this.networkEnabled = true;

    this.clientId = null;
    /** The server snapshot (rows, cookie, last mutation id): protocol.js's Receiver. */
    this.rx = new Receiver({ windowed: config.windowed || [] });
    this.nextMutationId = 1;
    /** Pending mutations, oldest first: {id, name, args, v (schema version), k (dedupe key)}. */
    this.pending = [];
    this.pendingKeys = new Set();

    this._db = null;
    this._recordPrefix = null; // (instance, user as the page was opened): see persist.js
    this._recordKey = null;
    this._ws = null;
    this._handshakeDone = false;
    this._sentUpto = 0;
    this._delay = 100;
    this._reconnectTimer = null;
    this._retryLater = false; // the last close was 1008/1013: keep backing off
    this._stableTimer = null;
    this.maxValueDepth = config.maxValueDepth ?? MAX_VALUE_DEPTH;
    this._subs = new Map(); // id -> {table, scope, cb, rows, engineRows}
    this._nextSub = 1;
    this._confirm = new Map(); // mutation id -> {resolve, reject, promise}
    this._actions = new Map(); // request id -> {resolve, reject, promise}
    this._nextAction = 1;
    this._listeners = { status: new Set(), failed: new Set(), ready: new Set(), change: new Set() };
    this._bridge = null;
    this._handover = null; // settles when the engine has taken over (or failed to)
    this._saveTimer = null;
    this._saving = Promise.resolve();
    this._log = opts.log || ((tag, msg) => console.debug(`synced-store: ${tag}:`, msg));
    this.ready = new Promise((resolve, reject) => { this._ready = { resolve, reject }; });
    this.ready.catch(() => {});
  }

  /** The server cookie of the snapshot (null: no server data yet). */
  get cookie() { return this.rx.cookie; }

  /** Highest mutation id whose effects are in the snapshot. */
  get lastMutationId() { return this.rx.lastMutationId; }

  /** The snapshot's rows: rowKey(ns, t, k) -> {ns, t, k, sk, v}. */
  get rows() { return this.rx.rows; }

  /** Load local data, connect, and start loading the Python engine. */
  async start() {
    const usePython = this.config.pyodide && !new URLSearchParams(location.search).has("nopy");
    // Start fetching and booting Python at once: its downloads and wasm compilation run off
    // the main thread while the shell restores local data, connects and renders.
    let runtime = null;
    if (usePython) {
      this._worker = new EngineWorker((out, ws) => this._applyOutput(out, ws), this._log);
      this._worker.socket = () => this._ws;
      runtime = this._worker.call("load", this.config.pyodide, location.href);
      runtime.catch(() => {});
      const wasmURL = new URL(this.config.pyodide.indexURL + "pyodide.asm.wasm", location.href);
      const compile = new URLSearchParams(location.search).get("pagecompile") === "0"
        ? Promise.resolve(null)  // (benchmarks: let the worker compile on its own)
        : WebAssembly.compileStreaming(fetch(wasmURL, { credentials: "same-origin" }));
      compile
        .catch((e) => { this._log("engine", `wasm compile on the page failed: ${e}`); return null; })
        .then((m) => this._worker.worker.postMessage({ wasmModule: m }));
    }
    await this._restore();
    this._emitAll();
    addEventListener("online", () => this._reconnectNow());
    addEventListener("offline", () => { if (this._ws) this._ws.close(4999, "offline"); });
    this._connect();
    if (runtime) {
      this._startEngine(runtime);
    } else if (this.config.pyodide) {
      this._log("engine", "Python disabled by ?nopy: mutations are sent to the server");
    } else {
      this._log("engine", "no web build: mutations are sent to the server (not optimistic)");
    }
    return this;
  }

  // -- page API --------------------------------------------------------------------------

  /**
   * Watch a table: `cb(rows, info)` now and on every change, with rows
   * `[{key, sortKey, value, pending}]` in table order and info `{optimistic, fromServer,
   * pending}` (`pending`: mutations not yet confirmed, `[{id, name, args}]`). Returns
   * unsubscribe.
   */
  subscribe({ table, scope = "public" }, cb) {
    const id = this._nextSub++;
    // rows: from the cached snapshot (before the engine); engineRows: from the engine.
    const sub = { id, table, scope, cb, rows: null, engineRows: null };
    this._subs.set(id, sub);
    if (this._bridge) this._engineCall("subscribe_table", id, table, scope);
    if (!this.optimistic) queueMicrotask(() => this._emit(sub));
    return () => {
      this._subs.delete(id);
      if (this._bridge) this._engineCall("unsubscribe", id);
    };
  }

  /** Run mutator `name`: optimistic once the Python engine runs, else sent to the server.
   *  Resolves to `{id, confirmed}` once applied locally (`confirmed` settles when the server
   *  confirms or rejects it); rejects at once on invalid input (when the engine runs), and
   *  always on args nested deeper than the server accepts (`kind: "value_too_deep"`).
   *  `pendingMutationDedupeKey`: of several unsent mutations with the same key, only the
   *  first and the last are sent (the Python client's `pending_mutation_dedupe_key`). */
  async mutate(name, args, { pendingMutationDedupeKey = null } = {}) {
    if (this.endReason) throw new Error(`session ended: ${this.endReason}`);
    if (!this.config.mutators.includes(name)) throw new Error(`unknown mutator ${name}`);
    checkDepth(args, this.maxValueDepth, `input for mutator '${name}'`);
    let m;
    if (this._bridge) {
      const r = JSON.parse(await this._bridge.call("mutate", name, JSON.stringify(args ?? {}),
        pendingMutationDedupeKey));
      if (!r.ok) {
        throw Object.assign(new Error(r.error), { kind: r.kind });
      }
      const [id, n, a, v, k] = r.mutation;
      m = { id, name: n, args: a, v, k };
      this.nextMutationId = r.next_mutation_id;
      this.pending.push(m);
    } else {
      m = { id: this.nextMutationId++, name, args: args ?? {}, v: this.config.schemaVersion,
        k: pendingMutationDedupeKey };
      this.pending.push(m);
      this._pushPending();
    }
    const confirmed = this._confirmation(m.id);
    this._save(true);
    if (this.optimistic) this._redeliver();
    else this._emitAll();
    return { id: m.id, confirmed };
  }

  /** Full-text search of a searchable table on the server (the "$search" built-in query),
   * over the rows this user may see: [{key, sort_key, value, private, score}], newest first
   * by the table's timestamp field, else by relevance (docs/api.md). */
  search(table, query, limit = 20) {
    return this.action("$search", { table, query, limit });
  }

  /** Run a server action (or a built-in "$..." query); flushes pending mutations first.
   * Resolves with its output. */
  async action(name, input) {
    if (!this.config.actions.includes(name) && !name.startsWith("$")) {
      throw new Error(`unknown action ${name}`);
    }
    checkDepth(input, this.maxValueDepth, `input for action '${name}'`);
    if (this._handover) await this._handover; // the engine is taking over the connection
    if (this.status === "connecting") { // (as right after the handover)
      await new Promise((resolve) => {
        const off = this.on("status", (s) => { if (s !== "connecting") { off(); resolve(); } });
      });
    }
    if (this.status !== "connected") throw new Error(`action ${name} needs the server: offline`);
    await this.waitForSync();
    if (this.status !== "connected") throw new Error(`action ${name}: connection lost`);
    if (this._bridge) {
      const r = JSON.parse(await this._bridge.call("call_action", name, JSON.stringify(input ?? null)));
      if (!r.ok) throw Object.assign(new Error(r.error), { kind: r.kind });
      return this._actionResult(r.request_id);
    }
    const rid = "s" + this._nextAction++;
    const result = this._actionResult(rid);
    this._send(actionFrame(rid, name, input ?? null));
    return result;
  }

  /**
   * Page older rows of a windowed table in (pull_windows; the engine's core/window.py): up to
   * `limit` rows older than the oldest held, from the server. Resolves with the number added
   * (0: the table is held from its first row). Needs the engine and the connection.
   */
  async loadOlder(table, { limit = 50, scope = "public" } = {}) {
    if (this._handover) await this._handover;
    if (!this._bridge) throw new Error("loadOlder needs the engine (Python is still loading)");
    for (let attempt = 0; attempt < 8; attempt++) {
      // Rows in the page changed while it was in flight: back off as the Python client does
      // (client/paging.py: 5 ms, doubling, at most 0.2 s), then ask again.
      if (attempt) await new Promise((ok) => setTimeout(ok, Math.min(5 * 2 ** (attempt - 1), 200)));
      const r = JSON.parse(await this._bridge.call("load_older", table, limit, scope === "private"));
      if (!r.ok) throw Object.assign(new Error(r.error), { kind: r.kind });
      if (r.done) return 0;
      let output = null;
      let failure = null;
      try { output = await this._actionResult(r.request_id); } catch (e) { failure = e; }
      const d = JSON.parse(await this._bridge.call("page_done", r.request_id, JSON.stringify(output)));
      if (failure) throw failure;
      if (d.added !== null) return d.added;
    }
    throw new Error("loadOlder: rows kept changing; try again");
  }

  /** Resolves when no mutation is pending. */
  waitForSync() {
    if (!this.pending.length) return Promise.resolve();
    return Promise.allSettled(this.pending.map((m) => this._confirmation(m.id)))
      .then(() => this.waitForSync());
  }

  /** Resolves once everything is written to IndexedDB. */
  async persisted() {
    if (this._saveTimer) { clearTimeout(this._saveTimer); this._saveTimer = null; this._save(true); }
    await this._saving;
  }

  on(event, cb) {
    this._listeners[event].add(cb);
    return () => this._listeners[event].delete(cb);
  }

  /** Cut (false) or restore (true) the network for this store (tests, "work offline"). */
  setNetworkEnabled(on) {
    this.networkEnabled = on;
    if (!on) {
      clearTimeout(this._reconnectTimer);
      if (this._ws) this._ws.close(4998, "network disabled");
    } else {
      this._reconnectNow();
    }
  }

  // -- persistence -----------------------------------------------------------------------

  async _restore() {
    const prefix = this._recordPrefix = recordPrefix(this.instanceId, this.userId);
    let records = [];
    try {
      this._db = await openDb();
      records = await idbAll(this._db, prefix);
    } catch (e) {
      this._log("idb", `IndexedDB unavailable: ${e}`);
    }
    // Prefer a client with pending work, then the most recently used one.
    records.sort((a, b) => (b.pending.length - a.pending.length) || (b.updated - a.updated));
    let rec = null;
    for (const r of records) {
      if (await tryLock(`synced-store:${r.key}`)) { rec = r; break; }
    }
    if (!rec) {
      this.clientId = randomId(8);
      this._recordKey = prefix + this.clientId;
      await tryLock(`synced-store:${this._recordKey}`);
      return;
    }
    this.clientId = rec.clientId;
    this._recordKey = rec.key;
    const st = readRecord(rec, this.config.schemaVersion, this.config.migratesFrom);
    this.rx = new Receiver({ ...st, windowed: this.config.windowed || [] });
    this.pending = st.pending;
    this.nextMutationId = st.nextMutationId;
    for (const m of this.pending) this._confirmation(m.id);
    this.restoredFromCache = st.cookie !== null;
  }

  _record() {
    return makeRecord({ key: this._recordKey, clientId: this.clientId,
      instanceId: this.instanceId, userId: this.userId, schemaVersion: this.config.schemaVersion,
      cookie: this.rx.cookie, lastMutationId: this.rx.lastMutationId,
      nextMutationId: this.nextMutationId, rows: this.rx.rows.values(), pending: this.pending });
  }

  _save(now = false) {
    if (!this._db) return;
    if (!now) {
      if (!this._saveTimer) this._saveTimer = setTimeout(() => { this._saveTimer = null; this._save(true); }, 100);
      return;
    }
    clearTimeout(this._saveTimer);
    this._saveTimer = null;
    const rec = this._record();
    this._saving = this._saving.then(() => idbPut(this._db, rec)).catch((e) => this._log("idb", String(e)));
  }

  // The server lost this client's history (ClientEngine._start_over): continue under
  // `clientId` with the pending mutations renumbered ({old id: new id}).
  _startedOver(clientId, renumbered) {
    const oldKey = this._recordKey;
    this.clientId = clientId;
    this._recordKey = this._recordPrefix + clientId;
    tryLock(`synced-store:${this._recordKey}`);
    const confirm = new Map();
    for (const m of this.pending) {
      const id = renumbered.get(m.id) ?? m.id;
      const c = this._confirm.get(m.id);
      if (c) confirm.set(id, c);
      m.id = id;
    }
    this._confirm = confirm;
    this.nextMutationId = this.pending.length + 1;
    this._sentUpto = 0;
    this.rx.cookie = null;
    this.rx.lastMutationId = 0;
    this._log("sync", `the server lost this client's history; continuing as client ${clientId}`);
    this._save(true);
    if (this._db && oldKey !== this._recordKey) {
      this._saving = this._saving.then(() => idbDelete(this._db, oldKey)).catch(() => {});
    }
  }

  // -- connection ------------------------------------------------------------------------

  _setStatus(s) {
    if (s === this.status) return;
    this.status = s;
    for (const cb of this._listeners.status) cb(s);
  }

  _reconnectNow() {
    clearTimeout(this._reconnectTimer);
    this._delay = 100;
    if (!this._ws && !this.endReason) this._connect();
  }

  _connect() {
    if (!this.networkEnabled || this.endReason || this._ws) return;
    this._setStatus("connecting");
    const url = new URL(this.config.syncPath + encodeURIComponent(this.instanceId), location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(url.href);
    } catch (e) {
      this._scheduleReconnect();
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      if (this._bridge) {
        this._engineCall("connect", this.token); // its connect frame goes out first
      } else {
        this.rx.newConnection();
        this._send(connectFrame({ schemaVersion: this.config.schemaVersion,
          clientId: this.clientId, token: this.token, cookie: this.rx.cookie,
          lastMutationId: this.rx.lastMutationId }));
      }
    };
    ws.onmessage = (e) => {
      if (this._ws !== ws || ws.dropped) return;
      try {
        this._onFrame(ws, e.data);
      } catch (err) {
        this._log("frame", `error handling a frame: ${err}\n${err.stack || ""}`);
        ws.close(CLOSE_RECONNECT, "client error");
      }
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._handshakeDone = false;
      clearTimeout(this._stableTimer);
      if (this._bridge) this._engineCall("disconnected");
      for (const a of this._actions.values()) a.reject(new Error("connection lost during the action"));
      this._actions.clear();
      const close = closeAction(e.code);
      if (close.terminal) {
        this._end(close.endReason, e.reason);
        return;
      }
      if (close.backOff) {
        this._log("closed", `${e.code} ${e.reason}: reconnecting with backoff`);
        this._retryLater = true;
        this._delay = Math.max(this._delay, Math.min(RETRY_LATER_MS, this.reconnectMax));
      }
      this._setStatus("disconnected");
      this._scheduleReconnect();
    };
  }

  // A frame could not be used (malformed, out of sequence, or the server asked to push
  // again): drop the rest of this connection's frames and reconnect; the catch-up of the next
  // connection brings the snapshot up to date and pending mutations are pushed again.
  _dropConnection(ws, why) {
    this._log("sync", `reconnecting: ${why}`);
    ws.dropped = true;
    ws.close(CLOSE_RECONNECT, "reconnect");
  }

  _scheduleReconnect() {
    if (!this.networkEnabled || this.endReason) return;
    clearTimeout(this._reconnectTimer);
    const delay = this._delay * (0.75 + Math.random() * 0.5);
    this._delay = Math.min(this._delay * 2, this.reconnectMax);
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  async _end(endReason, reason) {
    this.endReason = endReason;
    this._setStatus("ended");
    this._log("ended", `${this.endReason}: ${reason}`);
    const err = new Error(`session ended: ${this.endReason}`);
    for (const c of this._confirm.values()) c.reject(err);
    if (endReason === "schema_version_mismatch" && this._db) {
      await idbDelete(this._db, this._recordKey);
      location.reload();
    }
  }

  _send(text) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(text);
  }

  _onFrame(ws, data) {
    if (this._bridge) {
      // The engine receives every frame raw, exactly as it arrived.
      let text = data;
      if (typeof text !== "string") {
        try {
          text = utf8.decode(data);
        } catch (e) {
          this._dropConnection(ws, "a binary frame that is not UTF-8");
          return;
        }
      }
      this._bridge.call("receive", text).then(
        (why) => { if (why) this._dropConnection(ws, why); },
        (err) => {
          this._log("frame", `the engine failed on a frame: ${err.message}`);
          ws.close(CLOSE_RECONNECT, "client error");
        });
      return;
    }
    let r;
    try {
      r = this.rx.receive(data);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      if (e.startOver) {
        this._startedOver(randomId(8), new Map(this.pending.map((m, i) => [m.id, i + 1])));
      }
      if (e.serverError) this._log("server", `${e.serverError.kind}: ${e.serverError.message}`);
      this._dropConnection(ws, e.message);
      return;
    }
    switch (r.type) {
      case "connected":
        this._onConnected(r.userId);
        this._sentUpto = Math.max(r.lastMutationId, this.rx.lastMutationId);
        this._pushPending();
        break;
      case "poke":
        this.hasServerData = true;
        if (this.nextMutationId <= this.rx.lastMutationId) this.nextMutationId = this.rx.lastMutationId + 1;
        this._settle(r.lastMutationId, r.rejected);
        this._save(false);
        if (!this.optimistic) this._emitAll();
        break;
      case "action_result":
        this._actionDone(r.requestId, r.ok, r.output, r.kind, r.error);
        break;
      case "error":
        this._log("server", `${r.kind}: ${r.message}`);
        break;
      default: // buffered, push_response
    }
  }

  _onConnected(userId) {
    this._handshakeDone = true;
    clearTimeout(this._stableTimer);
    if (this._retryLater) {
      // After a 1008/1013 close the backoff resets only once this connection holds.
      this._stableTimer = setTimeout(() => { this._retryLater = false; this._delay = 100; }, STABLE_MS);
    } else {
      this._delay = 100;
    }
    if (typeof userId === "string" && userId) this.userId = userId;
    this._setStatus("connected");
  }

  // Before the engine: push the pending mutations not sent on this connection yet.
  _pushPending() {
    if (!this._handshakeDone || !this._ws) return;
    for (const f of pushFrames(this.pending, this._sentUpto, this.config.schemaVersion)) this._send(f);
    const last = this.pending.length ? this.pending[this.pending.length - 1].id : 0;
    if (last > this._sentUpto) this._sentUpto = last;
  }

  // -- confirmations ---------------------------------------------------------------------

  _settle(lastMutationId, rejected) {
    for (const e of rejected) this._rejected(e);
    this._confirmed(this.pending.filter((m) => m.id <= lastMutationId).map((m) => m.id));
  }

  // The server rejected mutation `e.id` for good ({id, name, kind, message}).
  _rejected(e) {
    const m = this.pending.find((p) => p.id === e.id);
    const err = Object.assign(new Error(`${e.name}: ${e.message}`), { kind: e.kind, mutationId: e.id });
    for (const cb of this._listeners.failed) cb(err, m || { id: e.id, name: e.name, args: null });
    const c = this._confirm.get(e.id);
    this._confirm.delete(e.id);
    if (c) c.reject(err);
  }

  // Mutations `ids` are confirmed (or were rejected, already reported): drop them.
  _confirmed(ids) {
    if (!ids.length) return;
    const done = new Set(ids);
    for (const id of ids) {
      const c = this._confirm.get(id);
      this._confirm.delete(id);
      if (c) c.resolve();
    }
    const keep = this.pending.filter((m) => !done.has(m.id));
    if (keep.length !== this.pending.length) {
      this.pending = keep;
      this._save(false);
      if (!this.optimistic) this._emitAll();
    }
  }

  _confirmation(id) {
    let c = this._confirm.get(id);
    if (!c) {
      c = {};
      c.promise = new Promise((resolve, reject) => { c.resolve = resolve; c.reject = reject; });
      c.promise.catch(() => {});
      this._confirm.set(id, c);
    }
    return c.promise;
  }

  _actionResult(rid) {
    const a = {};
    a.promise = new Promise((resolve, reject) => { a.resolve = resolve; a.reject = reject; });
    this._actions.set(rid, a);
    return a.promise;
  }

  _actionDone(rid, ok, output, kind, error) {
    const a = this._actions.get(rid);
    if (!a) return;
    this._actions.delete(rid);
    if (ok) a.resolve(output);
    else a.reject(Object.assign(new Error(error || "action failed"), { kind }));
  }

  // -- the engine ------------------------------------------------------------------------

  async _startEngine(runtime) {
    let handedOver;
    try {
      await runtime;
      this._handover = new Promise((resolve) => { handedOver = resolve; });
      // Actions the shell sent are answered on its connection: let them finish first.
      while (this._actions.size) {
        await Promise.allSettled(Array.from(this._actions.values(), (a) => a.promise));
      }
      const state = {
        user_id: this.userId, client_id: this.clientId, next_mutation_id: this.nextMutationId,
        cookie: this.rx.cookie, last_mutation_id: this.rx.lastMutationId,
        rows: Array.from(this.rx.rows.values(), (r) => [r.ns, r.t, r.k, r.sk, r.v]),
        pending: this.pending.map((m) => [m.id, m.name, m.args, m.v, m.k]),
        // The windows the last reset cut short ("ns|table"; null: unknown): the others are
        // held whole (core/window.py).
        windows_cut: this.rx.cut === null ? null : Array.from(this.rx.cut),
      };
      const spec = JSON.stringify({ schema: this.config.pyodide.python.schema,
        mutators: this.config.pyodide.python.mutators });
      const subs = Array.from(this._subs.values(), (sub) => [sub.id, sub.table, sub.scope]);
      // From this message on, every mutation, subscription and frame goes to the engine (the
      // worker handles messages in order). It gets a connection of its own: the shell's is
      // closed (frames still on their way there are dropped) and a new one opens at once,
      // which the engine starts with its connect frame; its catch-up continues from the
      // snapshot handed over, and it pushes every pending mutation the server lacks.
      const created = this._worker.call("create", spec, JSON.stringify(state), subs);
      this._bridge = this._worker;
      const ws = this._ws;
      if (ws) {
        this._ws = null;
        this._handshakeDone = false;
        ws.close(CLOSE_HANDOVER, "the engine takes over");
        this._reconnectNow();
      }
      this._adoptPending(JSON.parse(await created));
      this.optimistic = true;
      this._redeliver();
      performance.mark("synced-store:optimistic-ready");
      for (const cb of this._listeners.ready) cb();
      this._ready.resolve();
    } catch (e) {
      this.engineError = String(e && e.message ? e.message : e);
      this._log("engine", `Python engine failed to load; staying non-optimistic: ${e}`);
      if (this._bridge) {
        // The engine failed after taking over: reload to fall back to the shell alone.
        this._log("engine", "engine failed after taking over the connection");
      }
      for (const cb of this._listeners.ready) cb(e);
      this._ready.reject(e);
    } finally {
      if (handedOver) handedOver();
      this._handover = null;
    }
  }

  // The pending mutations the engine restored (it drops those the snapshot already holds and
  // those of mutators this app no longer has).
  _adoptPending(kept) {
    const ids = new Set(kept.map(([id]) => id));
    for (const m of this.pending) {
      if (ids.has(m.id)) continue;
      const c = this._confirm.get(m.id);
      this._confirm.delete(m.id);
      if (!c) continue;
      if (m.id <= this.rx.lastMutationId) c.resolve();
      else c.reject(Object.assign(new Error(`unknown mutator ${m.name}`), { kind: "unknown_name" }));
    }
    this.pending = kept.map(([id, name, args, v, k]) => ({ id, name, args, v, k }));
    this._save(false);
  }

  _engineCall(method, ...args) {
    this._bridge.call(method, ...args).catch((e) => this._log("engine", `${method} failed: ${e.message}`));
  }

  // Apply what the engine reports: send its frames (on the socket they were made for), handle
  // its events, deliver subscription results and pending marks.
  _applyOutput(out, ws) {
    if (ws && ws === this._ws) for (const frame of out.send) this._send(frame);
    for (const ev of out.events) {
      switch (ev.type) {
        case "connected":
          if (ws && ws === this._ws) this._onConnected(ev.user_id);
          break;
        case "snapshot":
          this._applySnapshot(ev);
          break;
        case "rejected":
          this._rejected(ev);
          break;
        case "confirmed":
          this._confirmed(ev.ids);
          break;
        case "action_result":
          this._actionDone(ev.request_id, ev.ok, ev.output, ev.kind, ev.error);
          break;
        case "started_over":
          this._startedOver(ev.client_id, new Map(ev.renumbered));
          break;
        case "server_error":
          this._log("server", `${ev.kind}: ${ev.message}`);
          break;
        default:
          this._log("engine", `unknown event ${ev.type}`);
      }
    }
    let pkChanged = false;
    if (out.pending_keys) {
      this.pendingKeys = new Set(out.pending_keys.map(([ns, t, k]) => rowKey(ns, t, k)));
      pkChanged = true;
    }
    const results = out.results || {};
    for (const sub of this._subs.values()) {
      const r = results[String(sub.id)];
      if (r) {
        if (r.error) { this._log("query", r.error); continue; }
        const ns = sub.scope === "private" ? "u:" + this.userId : "";
        sub.engineRows = r.rows.map(([k, sk, v]) => ({ key: k, sortKey: sk, value: v,
          pending: this.pendingKeys.has(rowKey(ns, sub.table, k)) }));
        if (this.optimistic) this._deliver(sub);
      } else if (pkChanged && sub.engineRows && this.optimistic) {
        this._markPending(sub);
        this._deliver(sub);
      }
    }
  }

  // A server update the engine applied: keep the cached snapshot (what IndexedDB holds) equal
  // to the engine's.
  _applySnapshot(ev) {
    const rows = this.rx.rows;
    if (ev.reset) rows.clear();
    for (const [ns, t, k, sk, v] of ev.rows) {
      if (sk === undefined) rows.delete(rowKey(ns, t, k));
      else rows.set(rowKey(ns, t, k), { ns, t, k, sk, v });
    }
    this.rx.cookie = ev.cookie;
    this.rx.lastMutationId = ev.last_mutation_id;
    this.hasServerData = true;
    this._save(false);
  }

  _markPending(sub) {
    const ns = sub.scope === "private" ? "u:" + this.userId : "";
    sub.engineRows = sub.engineRows.map((row) => ({ ...row,
      pending: this.pendingKeys.has(rowKey(ns, sub.table, row.key)) }));
  }

  _redeliver() {
    for (const sub of this._subs.values()) {
      if (sub.engineRows) { this._markPending(sub); this._deliver(sub); }
    }
  }

  // -- subscriptions without the engine --------------------------------------------------

  _emitAll() {
    for (const sub of this._subs.values()) this._emit(sub);
  }

  _emit(sub) {
    if (this.optimistic) { this._deliver(sub); return; }
    const ns = sub.scope === "private" ? "u:" + this.userId : "";
    const rows = [];
    for (const r of this.rx.rows.values()) {
      if (r.ns === ns && r.t === sub.table) rows.push(r);
    }
    rows.sort((a, b) => cmpStr(a.sk, b.sk) || cmpStr(a.k, b.k));
    sub.rows = rows.map((r) => ({ key: r.k, sortKey: r.sk, value: r.v, pending: false }));
    this._deliver(sub);
  }

  _deliver(sub) {
    const rows = this.optimistic ? sub.engineRows : sub.rows;
    if (!this._subs.has(sub.id) || !rows) return;
    const info = { optimistic: this.optimistic, fromServer: this.hasServerData,
      pending: this.pending.map((m) => ({ id: m.id, name: m.name, args: m.args })) };
    try {
      sub.cb(rows, info);
    } catch (e) {
      this._log("subscribe", `callback raised: ${e}\n${e.stack || ""}`);
    }
    for (const cb of this._listeners.change) cb();
  }
}

/** Create and start a store (see SyncedStore). */
export async function createStore(config, opts) {
  const store = new SyncedStore(config, opts);
  await store.start();
  return store;
}
