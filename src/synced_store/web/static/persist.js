// The page's local copy of a client in IndexedDB: one record per (instance, user, client id)
// holding what the Python client persists (storage/client_cache.py): the server snapshot, its
// cookie and last mutation id, and the pending mutations as [id, name, args, schema version,
// dedupe key]. Plain ES module, no dependencies.

const DB_NAME = "synced-store";
const DB_STORE = "clients";

/** The key prefix of an (instance, user)'s records; the client id completes it. */
export const recordPrefix = (instanceId, userId) => `${instanceId}\u0000${userId}\u0000`;

/**
 * The record to store for a client: `state` holds {key, clientId, instanceId, userId,
 * schemaVersion, cookie, lastMutationId, nextMutationId, rows: iterable of {ns, t, k, sk, v},
 * pending: [{id, name, args, v, k}]}.
 */
export function makeRecord(state) {
  return {
    key: state.key, clientId: state.clientId, instanceId: state.instanceId,
    userId: state.userId, schemaVersion: state.schemaVersion, cookie: state.cookie,
    lastMutationId: state.lastMutationId, nextMutationId: state.nextMutationId,
    rows: Array.from(state.rows, (r) => [r.ns, r.t, r.k, r.sk, r.v]),
    pending: state.pending.map((m) => [m.id, m.name, m.args, m.v, m.k]),
    updated: Date.now(),
  };
}

/**
 * What a stored record restores under the page's schema `schemaVersion` (`migratesFrom`: the
 * older versions the schema migrates from), as ClientEngine.restore does: `{cookie,
 * lastMutationId, nextMutationId, rows: [[ns, t, k, sk, v]], pending: [{id, name, args, v, k}]}`.
 * A record of another schema version loses its snapshot (the server sends everything again)
 * and keeps only the pending mutations the schema migrates (the server rewrites them; they are
 * pushed with their `v`). Mutations the snapshot already holds are dropped.
 */
export function readRecord(rec, schemaVersion, migratesFrom = []) {
  // (Records written before pending mutations carried their version and key: the record's.)
  let pending = rec.pending.map(([id, name, args, v = rec.schemaVersion, k = null]) =>
    ({ id, name, args, v, k }));
  let cookie = rec.cookie ?? null;
  let rows = rec.rows;
  if (rec.schemaVersion !== schemaVersion) {
    rows = [];
    cookie = null;
    pending = pending.filter((m) => m.v === schemaVersion || migratesFrom.includes(m.v));
  }
  const lastMutationId = rec.lastMutationId ?? 0;
  pending = pending.filter((m) => m.id > lastMutationId);
  const nextMutationId = Math.max(rec.nextMutationId ?? 1, lastMutationId + 1,
    ...pending.map((m) => m.id + 1));
  return { cookie, lastMutationId, nextMutationId, rows, pending };
}

// -- IndexedDB -------------------------------------------------------------------------------

export function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(DB_STORE, { keyPath: "key" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Every record whose key starts with `prefix`. */
export function idbAll(db, prefix) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(DB_STORE, "readonly");
    const req = tx.objectStore(DB_STORE).getAll(IDBKeyRange.bound(prefix, prefix + "\uffff"));
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Write a record (durably: resolves once it is on disk). */
export function idbPut(db, record) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(DB_STORE, "readwrite", { durability: "strict" });
    tx.objectStore(DB_STORE).put(record);
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export function idbDelete(db, key) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(DB_STORE, "readwrite");
    tx.objectStore(DB_STORE).delete(key);
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
  });
}

/** One tab owns a client id at a time (the server would kick the second connection):
 *  resolves true if this page now holds lock `name` (until it goes away). */
export function tryLock(name) {
  if (!navigator.locks) return Promise.resolve(true);
  return new Promise((resolve) => {
    navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      if (!lock) { resolve(false); return undefined; }
      resolve(true);
      return new Promise(() => {}); // held until the page goes away
    });
  });
}

/** A new client id: 16 hex digits, like the Python client's (secrets.token_hex(8)). */
export function randomId(bytes = 8) {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}
