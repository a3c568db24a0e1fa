// The browser's side of the wire protocol (docs/protocol.md), for the shell before the Python
// engine runs: decoding server frames, append frames, multi-part pokes, poke sequencing, the
// error kinds and close codes, and the few frames the shell sends (connect, push, action).
//
// It does what synced_store/protocol/ (codec.py, append.py, codes.py) and the receive path of
// synced_store/core/client_engine.py (ClientEngine.receive) do with the same frames, and the
// shared vectors in tests/vectors/*.json pin that: pytest runs them against the Python side,
// `node --test tests/js/` against this module. Once Pyodide is ready the engine receives every
// frame raw and this module is no longer on the receive path (docs/browser.md).
//
// Known differences, none of which our server produces: JSON.parse cannot tell `1.0` from `1`
// (Python refuses a float where an integer belongs), keeps the last of duplicate keys (msgspec
// refuses a second `type`), accepts escaped lone surrogates, and rounds integers above 2**53.
//
// Plain ES module, no dependencies.

export const PROTOCOL_VERSION = 1;
/** Frames above this many bytes are refused (codec.MAX_FRAME_BYTES). */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024;
/** Mutations per push frame, and about how many bytes (client_engine.PUSH_FRAME_*). */
export const PUSH_FRAME_MUTATIONS = 500;
export const PUSH_FRAME_BYTES = 1 << 20;
/** Name of a no-op placeholder mutation (messages.SKIP). */
export const SKIP = "$skip";
/** Close codes that end the session, and the end reason each gives (codes.END_REASONS). */
export const TERMINAL_CODES = Object.freeze({ 4000: "kicked", 4001: "auth_failed",
  4002: "version_mismatch", 4003: "bad_message", 4004: "bad_instance",
  4005: "schema_version_mismatch" });
/** Closes after which the client waits at least a second and keeps backing off (1008, 1013). */
export const BACK_OFF_CODES = Object.freeze([1008, 1013]);
/** `error` kinds after which the client reconnects and pushes again (codes.RECONNECT_ERROR_KINDS). */
export const RECONNECT_ERROR_KINDS = Object.freeze(["mutation_id_gap", "storage_busy"]);

/** A malformed or out-of-sequence frame, or the server asking for a new connection: the
 *  caller reconnects. `serverError` ({kind, message}) when an `error` frame asked for it;
 *  `startOver` when the server lost this client's history (see Receiver). */
export class ProtocolError extends Error {
  constructor(message, extra = {}) {
    super(message);
    this.name = "ProtocolError";
    Object.assign(this, extra);
  }
}

/** What a close code means to the client: `{terminal, endReason, backOff}`. */
export function closeAction(code) {
  const endReason = TERMINAL_CODES[code] ?? null;
  return { terminal: endReason !== null, endReason, backOff: BACK_OFF_CODES.includes(code) };
}

// -- decoding ----------------------------------------------------------------------------

const isInt = (v) => Number.isInteger(v);
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isStr = (v) => typeof v === "string";
const optional = (check) => (v) => v === undefined || v === null || check(v);
const optInt = optional(isInt);
const optStr = optional(isStr);
const has = (o, k) => Object.prototype.hasOwnProperty.call(o, k);

function bad(what) {
  throw new ProtocolError(`malformed server frame: ${what}`);
}

function need(msg, field, check, where) {
  if (!has(msg, field)) bad(`missing field '${field}'${where}`);
  if (!check(msg[field])) bad(`bad '${field}'${where}`);
}

function may(msg, field, check, where) {
  if (has(msg, field) && !check(msg[field])) bad(`bad '${field}'${where}`);
}

const strValues = (o) => Object.values(o).every(isStr);
const strList = (a) => Array.isArray(a) && a.every(isStr);

function checkOp(op, i) {
  const at = ` in patch[${i}]`;
  if (!isObj(op)) bad(`patch[${i}] is not an object`);
  need(op, "op", isStr, at);
  need(op, "t", isStr, at);
  need(op, "k", isStr, at);
  may(op, "ns", isStr, at);
  if (op.op === "set") {
    if (!has(op, "v")) bad(`missing field 'v'${at}`);
    may(op, "sk", isStr, at);
  } else if (op.op === "merge") {
    may(op, "sk", isStr, at);
    may(op, "append", optional((a) => isObj(a) && strValues(a)), at);
    may(op, "set", optional(isObj), at);
    may(op, "unset", optional(strList), at);
  } else if (op.op !== "del") {
    bad(`unknown op ${JSON.stringify(op.op)}${at}`);
  }
}

const isBinding = (b) => Array.isArray(b) && b.length >= 6 && isInt(b[0])
  && b.slice(1, 6).every(isStr);
const isReport = (e) => isObj(e) && isInt(e.id) && isStr(e.name) && isStr(e.kind)
  && isStr(e.message);

const MESSAGES = {
  poke(m) {
    need(m, "patch", Array.isArray, "");
    m.patch.forEach(checkOp);
    for (const f of ["cookie", "base_cookie", "last_mutation_id"]) may(m, f, optInt, "");
    may(m, "errors", optional((a) => Array.isArray(a) && a.every(isReport)), "");
    may(m, "final", optional((v) => typeof v === "boolean"), "");
    may(m, "reset", (v) => typeof v === "boolean", "");
    may(m, "bind", optional((a) => Array.isArray(a) && a.every(isBinding)), "");
  },
  connected(m) {
    for (const f of ["client_id", "user_id", "instance_id"]) need(m, f, isStr, "");
    need(m, "last_mutation_id", isInt, "");
    need(m, "schema_version", isInt, "");
  },
  push_response(m) {
    need(m, "last_mutation_id", isInt, "");
  },
  action_result(m) {
    need(m, "request_id", isStr, "");
    need(m, "ok", (v) => typeof v === "boolean", "");
    may(m, "kind", optStr, "");
    may(m, "error", optStr, "");
  },
  error(m) {
    need(m, "kind", isStr, "");
    need(m, "message", isStr, "");
  },
};

const NON_ASCII = /[^\x00-\x7f]/;

function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/**
 * Decode one server frame (text, or UTF-8 bytes): a checked message object, or the array of an
 * append frame (expand it with AppendFrames). Throws ProtocolError on anything malformed, where
 * codec.decode_server_message raises.
 */
export function decodeServerMessage(data) {
  let text = data;
  if (typeof text !== "string") {
    if (text.byteLength > MAX_FRAME_BYTES) bad(`frame of ${text.byteLength} bytes`);
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(text);
    } catch (e) {
      bad("not UTF-8");
    }
  } else if (text.length * 3 > MAX_FRAME_BYTES && utf8Length(text) > MAX_FRAME_BYTES) {
    bad(`frame of ${utf8Length(text)} bytes exceeds ${MAX_FRAME_BYTES}`);
  }
  let msg;
  try {
    msg = JSON.parse(text);
  } catch (e) {
    bad(`not JSON (${e.message})`);
  }
  if (Array.isArray(msg)) return msg;
  if (!isObj(msg)) bad("expected an object or an array");
  if (!has(msg, "type")) bad("missing field 'type'");
  const check = isStr(msg.type) && has(MESSAGES, msg.type) ? MESSAGES[msg.type] : null;
  if (!check) bad(`unknown type ${JSON.stringify(msg.type)}`);
  check(msg);
  return msg;
}

// -- append frames -----------------------------------------------------------------------

const mod10 = (n) => ((n % 10) + 10) % 10;

/**
 * Append frames (protocol/append.py): a streamed string's next bytes as
 * `[check, cookie_delta, handle, suffix, ...]`, handles bound per connection by the `bind` list
 * of an ordinary poke; `check` is the base cookie % 10.
 */
export class AppendFrames {
  constructor() {
    this.handles = new Map();
  }

  /** Note an ordinary poke's handle bindings (call for every poke). */
  observe(poke) {
    for (const [h, ns, t, k, field, sk] of poke.bind || []) this.handles.set(h, { ns, t, k, field, sk });
  }

  /** The poke an append frame stands for, applied to a receiver at `cookie`. */
  expand(frame, cookie) {
    const n = frame.length;
    const [check, delta] = n >= 4 && n % 2 === 0 ? frame : [null, null];
    if (!isInt(check) || !isInt(delta) || delta < 1 || delta % 10 === 0) {
      throw new ProtocolError(`malformed append frame: ${JSON.stringify(frame).slice(0, 200)}`);
    }
    if (cookie === null || cookie === undefined || mod10(cookie) !== check) {
      throw new ProtocolError(`out-of-sequence append frame (check ${check}, have ${cookie})`);
    }
    const patch = [];
    for (let i = 2; i < n; i += 2) {
      const h = frame[i];
      const suffix = frame[i + 1];
      const b = isInt(h) ? this.handles.get(h) : undefined;
      if (!b || !isStr(suffix)) {
        throw new ProtocolError(`append frame: unknown handle or bad suffix ${JSON.stringify(h)}`);
      }
      patch.push({ op: "merge", ns: b.ns, t: b.t, k: b.k, sk: b.sk, append: { [b.field]: suffix } });
    }
    return { type: "poke", base_cookie: cookie, cookie: cookie + delta, patch };
  }
}

// -- applying pokes ----------------------------------------------------------------------

/** The key of row (ns, table, item) in Receiver.rows. */
export const rowKey = (ns, t, k) => JSON.stringify([ns, t, k]);

function define(obj, key, value) {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

// core/patch.py apply_merge: the receiver's value with the suffixes appended, then the
// fields of `set` set and those of `unset` removed.
function applyMerge(old, op) {
  if (!isObj(old)) throw new ProtocolError("merge op for a row that is not an object on this side");
  const v = { ...old };
  for (const [f, suffix] of Object.entries(op.append || {})) {
    const base = has(v, f) ? v[f] : undefined;
    if (!isStr(base)) throw new ProtocolError(`merge op appends to a non-string field '${f}'`);
    define(v, f, base + suffix);
  }
  for (const [f, x] of Object.entries(op.set || {})) define(v, f, x);
  for (const f of op.unset || []) delete v[f];
  return v;
}

// core/patch.py op_row: the row {sk, v} after `op` (null: deleted).
function opRow(op, current) {
  if (op.op === "set") return { sk: op.sk || "", v: op.v };
  if (op.op === "del") return null;
  if (!current) throw new ProtocolError("merge op for a row this side does not have");
  return { sk: op.sk || "", v: applyMerge(current.v, op) };
}

/**
 * The shell's receive path before the Python engine runs: the server snapshot (`rows`,
 * `cookie`, `lastMutationId`) and the connection's append handles and buffered poke parts.
 * `receive(frame)` handles one frame like ClientEngine.receive and returns what happened:
 *
 *   {type: "connected", userId, lastMutationId}
 *   {type: "buffered"}                       a part of a multi-part poke
 *   {type: "poke", reset, changed, cookie, lastMutationId, rejected}   applied to `rows`
 *   {type: "push_response", lastMutationId}
 *   {type: "action_result", requestId, ok, output, kind, error}
 *   {type: "error", kind, message}          (not a reconnect-worthy kind)
 *
 * or throws ProtocolError (reconnect): a malformed or out-of-sequence frame (nothing changed),
 * an `error` of a reconnect-worthy kind (`serverError` set), or a `connected` whose
 * last_mutation_id is below this client's (`startOver` set: the cookie and last mutation id
 * are forgotten, and the caller must renumber its pending mutations under a new client id).
 * Call `newConnection()` when a connection starts.
 */
export class Receiver {
  constructor({ cookie = null, lastMutationId = 0, rows = [], windowed = [] } = {}) {
    this.cookie = cookie;
    this.lastMutationId = lastMutationId;
    /** Tables the schema windows (pull_windows): see _skip. */
    this.windowed = new Set(windowed);
    /** The windows the last reset cut short ("ns|table"); null: unknown, all of them. */
    this.cut = null;
    /** rowKey(ns, t, k) -> {ns, t, k, sk, v} */
    this.rows = new Map();
    for (const [ns, t, k, sk, v] of rows) this.rows.set(rowKey(ns, t, k), { ns, t, k, sk, v });
    this.newConnection();
  }

  /** A connection starts: forget the previous one's append handles and buffered parts. */
  newConnection() {
    this._append = new AppendFrames();
    this._parts = [];
  }

  receive(data) {
    const msg = decodeServerMessage(data);
    if (Array.isArray(msg)) return this._onPoke(this._append.expand(msg, this.cookie));
    switch (msg.type) {
      case "poke":
        if (msg.bind) this._append.observe(msg);
        return this._onPoke(msg);
      case "connected":
        if (msg.last_mutation_id < this.lastMutationId) {
          this.cookie = null;
          this.lastMutationId = 0;
          throw new ProtocolError("the server lost this client's history; reconnecting as a new client",
            { startOver: true });
        }
        return { type: "connected", userId: msg.user_id, lastMutationId: msg.last_mutation_id };
      case "action_result":
        return { type: "action_result", requestId: msg.request_id, ok: msg.ok,
          output: msg.output ?? null, kind: msg.kind ?? null, error: msg.error ?? null };
      case "error":
        if (RECONNECT_ERROR_KINDS.includes(msg.kind)) {
          throw new ProtocolError(`the server could not process a push (${msg.kind})`,
            { serverError: { kind: msg.kind, message: msg.message } });
        }
        return { type: "error", kind: msg.kind, message: msg.message };
      default: // push_response: informational (pokes confirm)
        return { type: "push_response", lastMutationId: msg.last_mutation_id };
    }
  }

  _onPoke(msg) {
    if (msg.final === false) {
      this._parts.push(msg);
      return { type: "buffered" };
    }
    const parts = this._parts;
    this._parts = [];
    const first = parts.length ? parts[0] : msg;
    const base = msg.base_cookie ?? null;
    if (!first.reset && base !== null && base !== this.cookie) {
      throw new ProtocolError(`out-of-sequence poke (base ${base}, have ${this.cookie})`);
    }
    if (msg.cookie === undefined || msg.cookie === null) {
      throw new ProtocolError("a final poke without a cookie");
    }
    if (first.reset) this.cut = new Set((msg.windows || []).map((w) => `${w[0]}|${w[1]}`));
    const all = [...parts, msg];
    const patch = all.flatMap((p) => p.patch);
    const errors = all.flatMap((p) => p.errors || []);
    return this._apply(!!first.reset, patch, msg.cookie, msg.last_mutation_id ?? null, errors);
  }

  // core/window.py: a client holds a windowed table as one run of rows from its oldest (the
  // floor) up to the newest, so a change to a row it does not hold below the floor is dropped
  // (the row is read fresh when paged in): a merge (or append) or del of a row it does not
  // have, a set below the floor. A set at or above it (a new row) applies.
  _skip(op, ns, key, after, floors) {
    if (!this.windowed.has(op.t) || after.has(key) || this.rows.has(key)) return false;
    if (op.op !== "set") return true;
    if (this.cut !== null && !this.cut.has(`${ns}|${op.t}`)) return false; // held whole
    const tk = JSON.stringify([ns, op.t]);
    if (!floors.has(tk)) {
      let fl = null;
      for (const r of this.rows.values()) {
        if (r.ns === ns && r.t === op.t && (fl === null || r.sk < fl.sk || (r.sk === fl.sk && r.k < fl.k))) fl = r;
      }
      floors.set(tk, fl);
    }
    const fl = floors.get(tk);
    const sk = op.sk || "";
    return fl !== null && (sk < fl.sk || (sk === fl.sk && op.k < fl.k));
  }

  _apply(reset, patch, cookie, lastMutationId, errors) {
    // Work out every row first, so a bad op changes nothing (no half-applied poke).
    const after = new Map();
    const floors = new Map();
    for (const op of patch) {
      const ns = op.ns || "";
      const key = rowKey(ns, op.t, op.k);
      if (!reset && this._skip(op, ns, key, after, floors)) continue;
      const cur = after.has(key) ? after.get(key) : reset ? null : this.rows.get(key) || null;
      const row = opRow(op, cur);
      after.set(key, row && { ns, t: op.t, k: op.k, sk: row.sk, v: row.v });
    }
    if (reset) this.rows.clear();
    for (const [key, row] of after) {
      if (row) this.rows.set(key, row);
      else this.rows.delete(key);
    }
    this.cookie = cookie;
    if (lastMutationId !== null && lastMutationId > this.lastMutationId) {
      this.lastMutationId = lastMutationId;
    }
    const byId = new Map();
    for (const e of errors) byId.set(e.id, e);
    const rejected = [...byId.values()].sort((a, b) => a.id - b.id)
      .map(({ id, name, kind, message }) => ({ id, name, kind, message }));
    return { type: "poke", reset, changed: [...after.keys()], cookie,
      lastMutationId: this.lastMutationId, rejected };
  }
}

// -- frames the shell sends --------------------------------------------------------------

/** The `connect` frame (text); null fields are left out, as the Python client does. */
export function connectFrame({ schemaVersion, clientId, token = null, cookie = null,
  lastMutationId = null }) {
  const m = { type: "connect", protocol_version: PROTOCOL_VERSION, schema_version: schemaVersion,
    client_id: clientId };
  if (token !== null) m.token = token;
  if (cookie !== null) m.cookie = cookie;
  if (lastMutationId !== null) m.last_mutation_id = lastMutationId;
  return JSON.stringify(m);
}

/** The `action` frame (text). */
export function actionFrame(requestId, name, input) {
  return JSON.stringify({ type: "action", request_id: requestId, name, input });
}

/**
 * Push frames (texts) for the pending mutations `{id, name, args, v, k}` with ids above
 * `sentUpto`, as ClientEngine pushes them: of unsent mutations sharing a dedupe key `k`, the
 * middle ones travel as `$skip` placeholders; `v` (the schema version a mutation was made
 * under) is sent when it differs from `schemaVersion`; at most `maxMutations` and about
 * `maxBytes` per frame.
 */
export function pushFrames(pending, sentUpto, schemaVersion,
  { maxMutations = PUSH_FRAME_MUTATIONS, maxBytes = PUSH_FRAME_BYTES } = {}) {
  const unsent = pending.filter((m) => m.id > sentUpto);
  const first = new Map();
  const last = new Map();
  for (const m of unsent) {
    if (m.k === null || m.k === undefined) continue;
    if (!first.has(m.k)) first.set(m.k, m.id);
    last.set(m.k, m.id);
  }
  const frames = [];
  let batch = [];
  let size = 0;
  const flush = () => frames.push(`{"type":"push","mutations":[${batch.join(",")}]}`);
  for (const m of unsent) {
    const skip = m.k !== null && m.k !== undefined && m.id !== first.get(m.k) && m.id !== last.get(m.k);
    const wire = skip ? { id: m.id, name: SKIP, args: null } : { id: m.id, name: m.name, args: m.args };
    if (!skip && m.v !== null && m.v !== undefined && m.v !== schemaVersion) wire.v = m.v;
    const data = JSON.stringify(wire);
    const n = NON_ASCII.test(data) ? utf8Length(data) : data.length;
    if (batch.length && (batch.length >= maxMutations || size + n > maxBytes)) {
      flush();
      batch = [];
      size = 0;
    }
    batch.push(data);
    size += n + 1;
  }
  if (batch.length) flush();
  return frames;
}
