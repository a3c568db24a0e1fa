// The shared protocol vectors (tests/vectors/*.json) against the browser shell's protocol.js.
// tests/protocol/test_vectors.py runs the same files against the Python codec and engine.
// Run: node --test tests/js/  (tests/web/test_protocol_js.py runs it from pytest).

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";

import { loadProtocol } from "./load.mjs";

const P = await loadProtocol();
const VECTORS = new URL("../vectors/", import.meta.url);
const read = (name) => JSON.parse(readFileSync(new URL(name, VECTORS), "utf8"));
const RECEIVE_FILES = readdirSync(VECTORS)
  .filter((f) => f.endsWith(".json") && f !== "close_codes.json" && f !== "pushes.json")
  .sort();

const byKey = (a, b) => {
  const x = JSON.stringify(a.slice(0, 3));
  const y = JSON.stringify(b.slice(0, 3));
  return x < y ? -1 : x > y ? 1 : 0;
};

function state(rx) {
  const rows = Array.from(rx.rows.values(), (r) => [r.ns, r.t, r.k, r.sk, r.v]).sort(byKey);
  return { cookie: rx.cookie, last_mutation_id: rx.lastMutationId, rows };
}

function checkState(rx, want, where) {
  const have = state(rx);
  for (const [key, value] of Object.entries(want)) {
    const expected = key === "rows" ? [...value].sort(byKey) : value;
    assert.deepStrictEqual(have[key], expected, `${where}: ${key}`);
  }
}

// What the receiver did with `frame`: the vector's `expect` and its details.
function outcome(rx, frame) {
  let r;
  try {
    r = rx.receive(frame);
  } catch (e) {
    if (!(e instanceof P.ProtocolError)) throw e;
    const detail = e.serverError ? { server_error: e.serverError } : {};
    return [e.startOver ? "started_over" : "reconnect", detail];
  }
  switch (r.type) {
    case "poke":
      return ["applied", { rejected: r.rejected }];
    case "connected":
      return ["connected", { connected: { user_id: r.userId, last_mutation_id: r.lastMutationId } }];
    case "action_result":
      return ["action_result", { action_result: { request_id: r.requestId, ok: r.ok,
        output: r.output, kind: r.kind, error: r.error } }];
    case "error":
      return ["error", { server_error: { kind: r.kind, message: r.message } }];
    default:
      return [r.type, {}]; // buffered, push_response
  }
}

for (const file of RECEIVE_FILES) {
  for (const c of read(file).cases) {
    test(`${file.slice(0, -5)}: ${c.name}`, () => {
      const st = c.state || {};
      const rx = new P.Receiver({ cookie: st.cookie ?? null,
        lastMutationId: st.last_mutation_id ?? 0, rows: st.rows || [] });
      c.steps.forEach((step, i) => {
        const where = `step ${i}`;
        if (step.new_connection) { rx.newConnection(); return; }
        if (!("expect" in step)) { checkState(rx, step.state, where); return; }
        const frame = "text" in step ? step.text : JSON.stringify(step.frame);
        const before = state(rx);
        const [expect, detail] = outcome(rx, frame);
        assert.equal(expect, step.expect, `${where}: ${frame.slice(0, 200)}`);
        if (expect === "applied") assert.deepStrictEqual(detail.rejected, step.rejected || [], where);
        for (const key of ["server_error", "connected", "action_result"]) {
          if (key in step) assert.deepStrictEqual(detail[key], step[key], `${where}: ${key}`);
        }
        if (step.state) checkState(rx, step.state, where);
        else if (["reconnect", "buffered", "error", "push_response", "action_result"].includes(expect)) {
          assert.deepStrictEqual(state(rx), before, `${where}: the state changed`);
        }
      });
    });
  }
}

test("close codes and error kinds", () => {
  const data = read("close_codes.json");
  for (const c of data.codes) {
    assert.deepStrictEqual(P.closeAction(c.code),
      { terminal: c.terminal, endReason: c.end_reason ?? null, backOff: c.back_off }, String(c.code));
  }
  assert.deepStrictEqual([...P.RECONNECT_ERROR_KINDS].sort(), [...data.reconnect_error_kinds].sort());
  assert.deepStrictEqual(Object.keys(P.TERMINAL_CODES).map(Number).sort(),
    data.codes.filter((c) => c.terminal).map((c) => c.code).sort());
});

const pushes = read("pushes.json");
for (const c of pushes.cases) {
  test(`pushes: ${c.name}`, () => {
    // As the engine restores them: pending mutations the snapshot holds are dropped.
    const pending = c.pending.filter(([id]) => id > c.last_mutation_id)
      .map(([id, name, args, v, k]) => ({ id, name, args, v, k }));
    const sentUpto = Math.max(c.server_last_mutation_id, c.last_mutation_id);
    const frames = P.pushFrames(pending, sentUpto, pushes.schema_version);
    assert.deepStrictEqual(frames.map((f) => JSON.parse(f)), c.pushes);
  });
}
