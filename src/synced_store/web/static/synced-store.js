// synced-store browser shell: WebSocket transport, IndexedDB persistence, and the page API.
//
// The shell keeps a *mirror* of the server snapshot (rows, cookie, last mutation id) and of the
// pending mutations, applies pokes to it and persists it in IndexedDB. Until Pyodide is ready it
// renders from the mirror and sends mutations to the server non-optimistically. Once Pyodide is
// ready, the sans-I/O Python ClientEngine (the same code as the Python client, running the app's
// Python mutators) takes over: mutations apply at once, server updates rebase pending work, and
// subscription results come from the engine. Plain ES module, no dependencies.

const PROTOCOL_VERSION = 1;
const TERMINAL = { 4000: "kicked", 4001: "auth_failed", 4002: "version_mismatch",
  4003: "bad_message", 4004: "bad_instance", 4005: "schema_version_mismatch" };
// Closes after which reconnecting soon would only repeat the problem: 1008 (policy violation:
// over a rate limit, or too slow to read) and 1013 (try again later: the server is at
// capacity). The shell reconnects, waiting at least RETRY_LATER_MS, and the backoff keeps
// growing until a connection stays up for STABLE_MS.
const RETRY_LATER = new Set([1008, 1013]);
const RETRY_LATER_MS = 1000;
const STABLE_MS = 10000;
// How deep arrays and objects may nest in a JSON value (mutation args, action input). The
// same number as MAX_VALUE_DEPTH in synced_store/core/keys.py, which the server enforces
// (tests/web/test_value_depth_browser.py checks that the two agree); a page config may pass
// it as `maxValueDepth`.
const MAX_VALUE_DEPTH = 32;
const DB_NAME = "synced-store";
const DB_STORE = "clients";

const keyOf = (ns, t, k) => JSON.stringify([ns, t, k]);
const cmpStr = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

// Append frames (protocol/append.py): a streamed string's next bytes as
// [check, cookie_delta, handle, suffix, ...], handles bound per connection by the "bind" list
// of an ordinary poke; check is the base cookie % 10. expand() rebuilds the poke the frame
// stands for, applied to a receiver at `cookie`.
class AppendFrames {
  constructor() { this.handles = new Map(); }

  observe(poke) {
    for (const [h, ns, t, k, field, sk] of poke.bind || []) this.handles.set(h, { ns, t, k, field, sk });
  }

  expand(frame, cookie) {
    const [check, delta] = frame;
    if (frame.length < 4 || frame.length % 2 || !Number.isInteger(check) || !Number.isInteger(delta)
        || delta < 1 || delta % 10 === 0) {
      throw new Error("malformed append frame");
    }
    if (cookie == null || cookie % 10 !== check) throw new Error(`out-of-sequence append frame (check ${check}, have ${cookie})`);
    const patch = [];
    for (let i = 2; i < frame.length; i += 2) {
      const b = this.handles.get(frame[i]);
      if (!b || typeof frame[i + 1] !== "string") throw new Error(`append frame: unknown handle ${frame[i]}`);
      const op = { op: "merge", t: b.t, k: b.k, append: { [b.field]: frame[i + 1] } };
      if (b.ns) op.ns = b.ns;
      if (b.sk) op.sk = b.sk;
      patch.push(op);
    }
    return { type: "poke", base_cookie: cookie, cookie: cookie + delta, patch };
  }
}

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

function randomId(bytes = 8) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

// -- IndexedDB -------------------------------------------------------------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(DB_STORE, { keyPath: "key" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function idbAll(db, prefix) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(DB_STORE, "readonly");
    const req = tx.objectStore(DB_STORE).getAll(IDBKeyRange.bound(prefix, prefix + "\uffff"));
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function idbPut(db, record) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(DB_STORE, "readwrite", { durability: "strict" });
    tx.objectStore(DB_STORE).put(record);
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

function idbDelete(db, key) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(DB_STORE, "readwrite");
    tx.objectStore(DB_STORE).delete(key);
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
}

// One tab owns a client id at a time (the server would kick the second connection).
function tryLock(name) {
  if (!navigator.locks) return Promise.resolve(true);
  return new Promise((resolve) => {
    navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      if (!lock) { resolve(false); return undefined; }
      resolve(true);
      return new Promise(() => {}); // held until the page goes away
    });
  });
}

// -- the engine worker -----------------------------------------------------------------------

// Calls into the Python engine running in engine-worker.js; answers arrive in call order.
class EngineWorker {
  constructor(onOutput, log) {
    this.worker = new Worker(new URL("./engine-worker.js", import.meta.url), { type: "module" });
    this.calls = new Map();
    this.nextId = 1;
    this.onOutput = onOutput;
    this.worker.onmessage = (e) => this._onMessage(e.data);
    this.worker.onerror = (e) => {
      log("engine", `worker error: ${e.message}`);
      for (const c of this.calls.values()) c.reject(new Error(`engine worker failed: ${e.message}`));
      this.calls.clear();
    };
  }

  call(method, ...args) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.worker.postMessage({ id, method, args });
    });
  }

  _onMessage(m) {
    if (m.progress) { performance.mark(m.progress); return; }
    if (m.output) this.onOutput(m.output);
    const c = this.calls.get(m.id);
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
    this.cookie = null;
    this.lastMutationId = 0;
    this.nextMutationId = 1;
    this.rows = new Map(); // keyOf(ns,t,k) -> {ns, t, k, sk, v}
    this.pending = []; // [{id, name, args}]
    this.pendingKeys = new Set();

    this._db = null;
    this._recordKey = null;
    this._ws = null;
    this._handshakeDone = false;
    this._sentUpto = 0;
    this._parts = [];
    this._delay = 100;
    this._reconnectTimer = null;
    this._retryLater = false; // the last close was 1008/1013: keep backing off
    this._stableTimer = null;
    this.maxValueDepth = config.maxValueDepth ?? MAX_VALUE_DEPTH;
    this._subs = new Map(); // id -> {table, scope, cb, rows}
    this._nextSub = 1;
    this._confirm = new Map(); // mutation id -> {resolve, reject, promise}
    this._actions = new Map();
    this._nextAction = 1;
    this._listeners = { status: new Set(), failed: new Set(), ready: new Set(), change: new Set() };
    this._bridge = null;
    this._saveTimer = null;
    this._saving = Promise.resolve();
    this._log = opts.log || ((tag, msg) => console.debug(`synced-store: ${tag}:`, msg));
    this.ready = new Promise((resolve, reject) => { this._ready = { resolve, reject }; });
    this.ready.catch(() => {});
  }

  /** Load local data, connect, and start loading the Python engine. */
  async start() {
    const usePython = this.config.pyodide && !new URLSearchParams(location.search).has("nopy");
    // Start fetching and booting Python at once: its downloads and wasm compilation run off
    // the main thread while the shell restores local data, connects and renders.
    let runtime = null;
    if (usePython) {
      this._worker = new EngineWorker((out) => this._applyOutput(out), this._log);
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
   * `[{key, sortKey, value, pending}]` in table order and info `{optimistic, pending}`
   * (`pending`: mutations not yet confirmed, `[{id, name, args}]`). Returns unsubscribe.
   */
  subscribe({ table, scope = "public" }, cb) {
    const id = this._nextSub++;
    // rows: from the shell's mirror (before the engine); engineRows: from the engine.
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
   *  always on args nested deeper than the server accepts (`kind: "value_too_deep"`). */
  async mutate(name, args) {
    if (this.endReason) throw new Error(`session ended: ${this.endReason}`);
    if (!this.config.mutators.includes(name)) throw new Error(`unknown mutator ${name}`);
    checkDepth(args, this.maxValueDepth, `input for mutator '${name}'`);
    let m;
    if (this._bridge) {
      const r = JSON.parse(await this._bridge.call("mutate", name, JSON.stringify(args ?? {})));
      if (!r.ok) {
        throw Object.assign(new Error(r.error), { kind: r.kind });
      }
      m = { id: r.id, name, args: r.args };
      this.nextMutationId = r.next_mutation_id;
      this.pending.push(m);
    } else {
      m = { id: this.nextMutationId++, name, args: args ?? {} };
      this.pending.push(m);
      if (this._handshakeDone && this._ws) {
        this._send({ type: "push", mutations: [{ id: m.id, name: m.name, args: m.args }] });
        this._sentUpto = m.id;
      }
    }
    const confirmed = this._confirmation(m.id);
    this._save(true);
    if (this.optimistic) this._redeliver();
    else this._emitAll();
    return { id: m.id, confirmed };
  }

  /** Run a server action; flushes pending mutations first. Resolves with its output. */
  async action(name, input) {
    if (!this.config.actions.includes(name)) throw new Error(`unknown action ${name}`);
    checkDepth(input, this.maxValueDepth, `input for action '${name}'`);
    if (this.status !== "connected") throw new Error(`action ${name} needs the server: offline`);
    await this.waitForSync();
    if (this.status !== "connected") throw new Error(`action ${name}: connection lost`);
    const rid = "a" + this._nextAction++;
    return new Promise((resolve, reject) => {
      this._actions.set(rid, { resolve, reject });
      this._send({ type: "action", request_id: rid, name, input });
    });
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
    const prefix = `${this.instanceId}\u0000${this.userId}\u0000`;
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
    if (rec.schemaVersion !== this.config.schemaVersion) return; // stale data: start fresh
    this.cookie = rec.cookie;
    this.lastMutationId = rec.lastMutationId;
    this.nextMutationId = rec.nextMutationId;
    for (const [ns, t, k, sk, v] of rec.rows) this.rows.set(keyOf(ns, t, k), { ns, t, k, sk, v });
    this.pending = rec.pending.map(([id, name, args]) => ({ id, name, args }));
    for (const m of this.pending) this._confirmation(m.id);
    this.restoredFromCache = rec.cookie !== null && rec.cookie !== undefined;
  }

  _record() {
    const rows = [];
    for (const r of this.rows.values()) rows.push([r.ns, r.t, r.k, r.sk, r.v]);
    return {
      key: this._recordKey, clientId: this.clientId, instanceId: this.instanceId,
      userId: this.userId, schemaVersion: this.config.schemaVersion, cookie: this.cookie,
      lastMutationId: this.lastMutationId, nextMutationId: this.nextMutationId, rows,
      pending: this.pending.map((m) => [m.id, m.name, m.args]), updated: Date.now(),
    };
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
    this._ws = ws;
    this._frames = new AppendFrames();
    ws.onopen = () => {
      this._send({ type: "connect", protocol_version: PROTOCOL_VERSION,
        schema_version: this.config.schemaVersion, client_id: this.clientId, token: this.token,
        cookie: this.cookie, last_mutation_id: this.lastMutationId });
    };
    ws.onmessage = (e) => {
      try {
        this._onFrame(e.data);
      } catch (err) {
        this._log("frame", `error handling a frame: ${err}\n${err.stack || ""}`);
        ws.close(4997, "client error");
      }
    };
    ws.onclose = (e) => {
      if (this._ws !== ws) return;
      this._ws = null;
      this._handshakeDone = false;
      this._parts = [];
      clearTimeout(this._stableTimer);
      if (this._bridge) this._engineCall("disconnected");
      for (const a of this._actions.values()) a.reject(new Error("connection lost during the action"));
      this._actions.clear();
      if (TERMINAL[e.code]) {
        this._end(e.code, e.reason);
        return;
      }
      if (RETRY_LATER.has(e.code)) {
        this._log("closed", `${e.code} ${e.reason}: reconnecting with backoff`);
        this._retryLater = true;
        this._delay = Math.max(this._delay, Math.min(RETRY_LATER_MS, this.reconnectMax));
      }
      this._setStatus("disconnected");
      this._scheduleReconnect();
    };
  }

  _scheduleReconnect() {
    if (!this.networkEnabled || this.endReason) return;
    clearTimeout(this._reconnectTimer);
    const delay = this._delay * (0.75 + Math.random() * 0.5);
    this._delay = Math.min(this._delay * 2, this.reconnectMax);
    this._reconnectTimer = setTimeout(() => this._connect(), delay);
  }

  async _end(code, reason) {
    this.endReason = TERMINAL[code];
    this._setStatus("ended");
    this._log("ended", `${this.endReason}: ${reason}`);
    const err = new Error(`session ended: ${this.endReason}`);
    for (const c of this._confirm.values()) c.reject(err);
    if (code === 4005 && this._db) {
      await idbDelete(this._db, this._recordKey);
      location.reload();
    }
  }

  _send(msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(typeof msg === "string" ? msg : JSON.stringify(msg));
  }

  _onFrame(text) {
    let msg = JSON.parse(text);
    if (Array.isArray(msg)) {
      msg = this._frames.expand(msg, this.cookie);
      text = JSON.stringify(msg);
    } else if (msg.type === "poke" && msg.bind) {
      this._frames.observe(msg);
    }
    switch (msg.type) {
      case "connected":
        this._handshakeDone = true;
        clearTimeout(this._stableTimer);
        if (this._retryLater) {
          // After a 1008/1013 close the backoff resets only once this connection holds.
          this._stableTimer = setTimeout(() => { this._retryLater = false; this._delay = 100; }, STABLE_MS);
        } else {
          this._delay = 100;
        }
        if (typeof msg.user_id === "string") this.userId = msg.user_id;
        if (this._bridge) {
          this._engineCall("receive", text);
        } else {
          this._sentUpto = Math.max(msg.last_mutation_id || 0, this.lastMutationId);
          const muts = this.pending.filter((m) => m.id > this._sentUpto)
            .map((m) => ({ id: m.id, name: m.name, args: m.args }));
          for (let i = 0; i < muts.length; i += 500) this._send({ type: "push", mutations: muts.slice(i, i + 500) });
          if (muts.length) this._sentUpto = muts[muts.length - 1].id;
        }
        this._setStatus("connected");
        break;
      case "poke": {
        if (msg.final === false) { this._parts.push(msg); return; }
        let poke = msg;
        let raw = text;
        if (this._parts.length) {
          const parts = this._parts;
          this._parts = [];
          // The parts apply as one poke; rejected-mutation reports (`errors`) may be in any part.
          poke = { ...msg, reset: !!parts[0].reset,
            patch: [...parts.flatMap((p) => p.patch || []), ...(msg.patch || [])],
            errors: [...parts.flatMap((p) => p.errors || []), ...(msg.errors || [])] };
          raw = JSON.stringify(poke);
        }
        this._applyPoke(poke);
        if (this._bridge) this._engineCall("receive", raw);
        if (!this.optimistic) this._emitAll();
        this._settle(poke);
        break;
      }
      case "push_response":
        if (this._bridge) this._engineCall("receive", text);
        break;
      case "action_result": {
        const a = this._actions.get(msg.request_id);
        if (a) {
          this._actions.delete(msg.request_id);
          if (msg.ok) a.resolve(msg.output);
          else a.reject(Object.assign(new Error(msg.error || "action failed"), { kind: msg.kind }));
        }
        break;
      }
      case "error":
        this._log("server", `${msg.kind}: ${msg.message}`);
        break;
      default:
        this._log("server", `unexpected frame type ${msg.type}`);
    }
  }

  // Apply a poke to the mirror (the server snapshot) and drop confirmed mutations.
  _applyPoke(poke) {
    if (poke.reset) this.rows.clear();
    for (const op of poke.patch || []) {
      const ns = op.ns || "";
      const key = keyOf(ns, op.t, op.k);
      if (op.op === "set") {
        this.rows.set(key, { ns, t: op.t, k: op.k, sk: op.sk || "", v: op.v });
      } else if (op.op === "del") {
        this.rows.delete(key);
      } else if (op.op === "merge") {
        const cur = this.rows.get(key);
        if (!cur) throw new Error(`merge op for a row this client does not have: ${key}`);
        const v = { ...cur.v };
        for (const [f, suffix] of Object.entries(op.append || {})) v[f] = v[f] + suffix;
        Object.assign(v, op.set || {});
        for (const f of op.unset || []) delete v[f];
        this.rows.set(key, { ns, t: op.t, k: op.k, sk: op.sk || "", v });
      }
    }
    this.cookie = poke.cookie;
    this.hasServerData = true;
    if (poke.last_mutation_id != null && poke.last_mutation_id > this.lastMutationId) {
      this.lastMutationId = poke.last_mutation_id;
    }
    if (this.nextMutationId <= this.lastMutationId) this.nextMutationId = this.lastMutationId + 1;
    this._save(false);
  }

  _settle(poke) {
    const failed = new Map((poke.errors || []).map((e) => [e.id, e]));
    const keep = [];
    for (const m of this.pending) {
      if (m.id > this.lastMutationId) { keep.push(m); continue; }
      const c = this._confirm.get(m.id);
      this._confirm.delete(m.id);
      const e = failed.get(m.id);
      if (e) {
        const err = Object.assign(new Error(`${e.name}: ${e.message}`), { kind: e.kind, mutationId: m.id });
        for (const cb of this._listeners.failed) cb(err, m);
        if (c) c.reject(err);
      } else if (c) {
        c.resolve();
      }
    }
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

  // -- the engine ------------------------------------------------------------------------

  async _startEngine(runtime) {
    try {
      await runtime;
      const state = {
        user_id: this.userId, client_id: this.clientId, next_mutation_id: this.nextMutationId,
        cookie: this.cookie, last_mutation_id: this.lastMutationId,
        rows: Array.from(this.rows.values(), (r) => [r.ns, r.t, r.k, r.sk, r.v]),
        pending: this.pending.map((m) => [m.id, m.name, m.args]),
      };
      const spec = JSON.stringify({ schema: this.config.pyodide.python.schema,
        mutators: this.config.pyodide.python.mutators });
      const subs = Array.from(this._subs.values(), (sub) => [sub.id, sub.table, sub.scope]);
      // From this message on, every frame, mutation and subscription goes to the engine (the
      // worker handles messages in order). It adopts a live connection: it pushes only what
      // the shell has not sent on it.
      const created = this._worker.call("create", spec, JSON.stringify(state),
        this._handshakeDone ? this._sentUpto : null, subs);
      this._bridge = this._worker;
      await created;
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
    }
  }

  _engineCall(method, ...args) {
    this._bridge.call(method, ...args).catch((e) => {
      this._log("engine", `${method} failed: ${e.message}`);
      if (method === "receive" && this._ws) this._ws.close(4997, "client error");
    });
  }

  // Apply what the engine says: send its frames, deliver subscription results and marks.
  _applyOutput(out) {
    // The engine pushes on its own (it tracks what it sent on this connection).
    for (const frame of out.send) this._send(frame);
    let pkChanged = false;
    if (out.pending_keys) {
      this.pendingKeys = new Set(out.pending_keys.map(([ns, t, k]) => keyOf(ns, t, k)));
      pkChanged = true;
    }
    const results = out.results || {};
    for (const sub of this._subs.values()) {
      const r = results[String(sub.id)];
      if (r) {
        if (r.error) { this._log("query", r.error); continue; }
        const ns = sub.scope === "private" ? "u:" + this.userId : "";
        sub.engineRows = r.rows.map(([k, sk, v]) => ({ key: k, sortKey: sk, value: v,
          pending: this.pendingKeys.has(keyOf(ns, sub.table, k)) }));
        if (this.optimistic) this._deliver(sub);
      } else if (pkChanged && sub.engineRows && this.optimistic) {
        this._markPending(sub);
        this._deliver(sub);
      }
    }
  }

  _markPending(sub) {
    const ns = sub.scope === "private" ? "u:" + this.userId : "";
    sub.engineRows = sub.engineRows.map((row) => ({ ...row,
      pending: this.pendingKeys.has(keyOf(ns, sub.table, row.key)) }));
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
    for (const r of this.rows.values()) {
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
