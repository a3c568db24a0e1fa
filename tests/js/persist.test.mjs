// persist.js: the IndexedDB record holds what the Python client persists, and restoring it
// under another schema version does what ClientEngine.restore does.

import assert from "node:assert/strict";
import { test } from "node:test";

import { load } from "./load.mjs";

const P = await load("persist.js");

const rec = (extra) => ({ key: "room\u0000alice\u0000c1", clientId: "c1", instanceId: "room",
  userId: "alice", schemaVersion: 2, cookie: 9, lastMutationId: 3, nextMutationId: 6,
  rows: [["", "t", "a", "s", { x: 1 }]], updated: 1, ...extra });

test("pending mutations are stored with their schema version and dedupe key", () => {
  const r = P.makeRecord({ key: "k", clientId: "c1", instanceId: "room", userId: "alice",
    schemaVersion: 2, cookie: 9, lastMutationId: 3, nextMutationId: 6,
    rows: [{ ns: "", t: "t", k: "a", sk: "s", v: { x: 1 } }],
    pending: [{ id: 4, name: "add", args: { a: 1 }, v: 1, k: "draft" },
      { id: 5, name: "add", args: {}, v: 2, k: null }] });
  assert.deepStrictEqual(r.pending, [[4, "add", { a: 1 }, 1, "draft"], [5, "add", {}, 2, null]]);
  assert.deepStrictEqual(r.rows, [["", "t", "a", "s", { x: 1 }]]);
  const back = P.readRecord(r, 2, [1]);
  assert.deepStrictEqual(back.pending, [{ id: 4, name: "add", args: { a: 1 }, v: 1, k: "draft" },
    { id: 5, name: "add", args: {}, v: 2, k: null }]);
  assert.equal(back.cookie, 9);
  assert.equal(back.nextMutationId, 6);
});

test("a record from before versions and keys were stored takes the record's version", () => {
  const st = P.readRecord(rec({ pending: [[4, "add", { a: 1 }], [5, "add", {}]] }), 2);
  assert.deepStrictEqual(st.pending.map((m) => [m.id, m.v, m.k]), [[4, 2, null], [5, 2, null]]);
  assert.deepStrictEqual(st.rows, [["", "t", "a", "s", { x: 1 }]]);
});

test("another schema version drops the snapshot and keeps what the schema migrates", () => {
  const pending = [[4, "add", {}, 1, null], [5, "add", {}, 2, null]];
  const migrates = P.readRecord(rec({ schemaVersion: 2, pending }), 3, [1, 2]);
  assert.deepStrictEqual([migrates.cookie, migrates.rows], [null, []]);
  assert.deepStrictEqual(migrates.pending.map((m) => [m.id, m.v]), [[4, 1], [5, 2]]);
  assert.equal(migrates.lastMutationId, 3);
  const only2 = P.readRecord(rec({ schemaVersion: 2, pending }), 3, [2]);
  assert.deepStrictEqual(only2.pending.map((m) => m.id), [5]);
  const none = P.readRecord(rec({ schemaVersion: 2, pending }), 3, []);
  assert.deepStrictEqual(none.pending, []);
});

test("mutations the snapshot holds are dropped; ids continue after every kept one", () => {
  const st = P.readRecord(rec({ nextMutationId: 2, pending: [[3, "a", {}, 2, null], [7, "a", {}, 2, null]] }), 2);
  assert.deepStrictEqual(st.pending.map((m) => m.id), [7]);
  assert.equal(st.nextMutationId, 8);
});
