// Import the shell's protocol.js as an ES module whatever the Node version: a `.js` file outside
// a `"type": "module"` package is CommonJS to Node before 20.19, so it is loaded from its text.

import { readFileSync } from "node:fs";

export const PROTOCOL_JS = new URL("../../src/synced_store/web/static/protocol.js", import.meta.url);

export async function loadProtocol() {
  const text = readFileSync(PROTOCOL_JS, "utf8");
  return import("data:text/javascript;base64," + Buffer.from(text).toString("base64"));
}
