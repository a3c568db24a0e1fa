// protocol.js beyond the shared vectors: frame size, the frames the shell sends, push chunking,
// and row values whose keys are special to JavaScript objects.

import assert from "node:assert/strict";
import { test } from "node:test";

import { loadProtocol } from "./load.mjs";

const P = await loadProtocol();

test("a frame above MAX_FRAME_BYTES is refused, as text or as bytes", () => {
  const pad = (n) => `{"type":"push_response","last_mutation_id":1,"x":"${"é".repeat(n)}"}`;
  const fits = pad((P.MAX_FRAME_BYTES - 60) / 2);
  assert.equal(P.decodeServerMessage(fits).type, "push_response");
  const over = pad(P.MAX_FRAME_BYTES / 2); // ~4 Mi characters, 8 MiB + of UTF-8
  assert.ok(over.length < P.MAX_FRAME_BYTES);
  assert.throws(() => P.decodeServerMessage(over), P.ProtocolError);
  assert.throws(() => P.decodeServerMessage(new TextEncoder().encode(over)), P.ProtocolError);
  assert.equal(P.decodeServerMessage(new TextEncoder().encode(fits)).type, "push_response");
  assert.throws(() => P.decodeServerMessage(new Uint8Array([0x5b, 0xff, 0x5d])), P.ProtocolError);
});

test("connect leaves out what the client does not have", () => {
  assert.deepStrictEqual(JSON.parse(P.connectFrame({ schemaVersion: 3, clientId: "c1" })),
    { type: "connect", protocol_version: 1, schema_version: 3, client_id: "c1" });
  assert.deepStrictEqual(JSON.parse(P.connectFrame({ schemaVersion: 3, clientId: "c1",
    token: "t", cookie: 0, lastMutationId: 0 })),
  { type: "connect", protocol_version: 1, schema_version: 3, client_id: "c1", token: "t",
    cookie: 0, last_mutation_id: 0 });
  assert.deepStrictEqual(JSON.parse(P.actionFrame("a1", "callBot", { x: [1] })),
    { type: "action", request_id: "a1", name: "callBot", input: { x: [1] } });
});

test("pushes travel in frames of at most 500 mutations and about 1 MiB", () => {
  const pending = Array.from({ length: 1201 }, (_, i) => ({ id: i + 1, name: "n", args: {}, v: 1, k: null }));
  const frames = P.pushFrames(pending, 0, 1).map((f) => JSON.parse(f).mutations.map((m) => m.id));
  assert.deepStrictEqual(frames.map((ids) => ids.length), [500, 500, 201]);
  assert.deepStrictEqual(frames.flat(), pending.map((m) => m.id));
  const big = "é".repeat(200 * 1024); // 400 KiB of UTF-8 each
  const large = [1, 2, 3, 4].map((id) => ({ id, name: "n", args: { big }, v: 1, k: null }));
  const sizes = P.pushFrames(large, 0, 1).map((f) => JSON.parse(f).mutations.length);
  assert.deepStrictEqual(sizes, [2, 2]);
  const huge = [{ id: 1, name: "n", args: { big: big + big + big }, v: 1, k: null }];
  assert.equal(P.pushFrames(huge, 0, 1).length, 1); // a single larger mutation travels alone
});

test("row values keep keys such as __proto__ as plain data", () => {
  const rx = new P.Receiver({ cookie: 1, rows: [["", "t", "r", "", JSON.parse('{"__proto__": "a"}')]] });
  rx.receive('{"type":"poke","base_cookie":1,"cookie":2,"patch":[{"op":"merge","t":"t","k":"r",'
    + '"append":{"__proto__":"b"},"set":{"constructor":1}}]}');
  const v = rx.rows.get(P.rowKey("", "t", "r")).v;
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.deepStrictEqual(Object.keys(v).sort(), ["__proto__", "constructor"]);
  assert.equal(JSON.stringify(v), '{"__proto__":"ab","constructor":1}');
  assert.throws(() => rx.receive('{"type":"poke","base_cookie":2,"cookie":3,"patch":'
    + '[{"op":"merge","t":"t","k":"r","append":{"toString":"x"}}]}'), P.ProtocolError);
});

test("a windowed table drops changes below its floor; other tables still fail loudly", () => {
  const row = (k, sk) => ["", "msgs", k, sk, { text: k }];
  const rx = new P.Receiver({ cookie: 1, rows: [row("m5", "05"), row("m6", "06")], windowed: ["msgs"] });
  const poke = (base, patch) => rx.receive(JSON.stringify({ type: "poke", base_cookie: base,
    cookie: base + 1, patch }));
  poke(1, [
    { op: "merge", t: "msgs", k: "m1", sk: "01", append: { text: "!" } }, // not held: dropped
    { op: "set", t: "msgs", k: "m2", sk: "02", v: { text: "old" } }, // below the floor: dropped
    { op: "del", t: "msgs", k: "m3" }, // not held: dropped
    { op: "set", t: "msgs", k: "m7", sk: "07", v: { text: "new" } }, // a new row: applied
    { op: "merge", t: "msgs", k: "m5", sk: "05", append: { text: "+" } }, // held: applied
  ]);
  assert.deepStrictEqual([...rx.rows.values()].map((r) => [r.k, r.v.text]).sort(),
    [["m5", "m5+"], ["m6", "m6"], ["m7", "new"]]);
  assert.equal(rx.cookie, 2);
  // Append frames bound to a row the client does not hold are dropped the same way.
  rx.receive(JSON.stringify({ type: "poke", base_cookie: 2, cookie: 3, patch: [],
    bind: [[1, "", "msgs", "m1", "text", "01"]] }));
  rx.receive(JSON.stringify([3 % 10, 1, 1, "abc"]));
  assert.equal(rx.cookie, 4);
  assert.ok(!rx.rows.has(P.rowKey("", "msgs", "m1")));
  // A reset says which windows it cut short: the others hold the whole table and take every
  // new row, below the oldest held or not.
  rx.receive(JSON.stringify({ type: "poke", reset: true, cookie: 9, patch: [
    { op: "set", t: "msgs", k: "m5", sk: "05", v: { text: "m5" } }], windows: [] }));
  poke(9, [{ op: "set", t: "msgs", k: "m1", sk: "01", v: { text: "first" } }]);
  assert.ok(rx.rows.has(P.rowKey("", "msgs", "m1")));
  rx.receive(JSON.stringify({ type: "poke", reset: true, cookie: 20, patch: [
    { op: "set", t: "msgs", k: "m5", sk: "05", v: { text: "m5" } }],
    windows: [["", "msgs", "05", "m5"]] }));
  poke(20, [{ op: "set", t: "msgs", k: "m1", sk: "01", v: { text: "first" } }]);
  assert.ok(!rx.rows.has(P.rowKey("", "msgs", "m1")));
  // A table that is not windowed: a merge for a missing row is still a protocol error.
  assert.throws(() => poke(21, [{ op: "merge", t: "other", k: "x", append: { a: "b" } }]),
    P.ProtocolError);
});
