// Import the shell's modules as ES modules whatever the Node version: a `.js` file outside a
// `"type": "module"` package is CommonJS to Node before 20.19, so each is loaded from its text
// (they import nothing).

import { readFileSync } from "node:fs";

const STATIC = new URL("../../src/synced_store/web/static/", import.meta.url);

export async function load(name) {
  const text = readFileSync(new URL(name, STATIC), "utf8");
  return import("data:text/javascript;base64," + Buffer.from(text).toString("base64"));
}

export const loadProtocol = () => load("protocol.js");
