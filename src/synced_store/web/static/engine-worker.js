// The Python engine in a Web Worker: Pyodide + the sans-I/O ClientEngine + the app's mutators.
//
// The page's shell (synced-store.js) talks to it with {id, method, args} messages, handled one
// at a time in arrival order: the bridge's methods (web/pyodide_bridge.py), server frames
// passed to `receive` exactly as they arrived. Every answer carries the bridge's output (frames
// to send, events, subscription results, pending keys), so the shell applies it before the
// call resolves.
// Booting Python (seconds of CPU) happens here, off the page's main thread.

let py = null;
let mod = null;
let bridge = null;
let chain = Promise.resolve();
// The page compiles pyodide.asm.wasm itself and sends the WebAssembly.Module here: a window's
// streaming compile uses (and fills) the browser's wasm code cache, which halves Python's boot
// on a warm load; a worker's own compile did not get that benefit in Chromium 156.
let resolveWasm;
const wasmModule = new Promise((resolve) => { resolveWasm = resolve; });

const log = (tag, msg) => console.debug(`synced-store: worker ${tag}:`, msg);
const progress = (name) => postMessage({ progress: name });

async function load(pyCfg, origin) {
  const indexURL = new URL(pyCfg.indexURL, origin).href;
  const [{ loadPyodide }, bundle] = await Promise.all([
    import(indexURL + "pyodide.mjs"),
    fetch(new URL(pyCfg.python.bundle, origin)).then((r) => {
      if (!r.ok) throw new Error(`python bundle: HTTP ${r.status}`);
      return r.json();
    }),
  ]);
  progress("synced-store:pyodide-import");
  const compiled = await wasmModule;
  if (compiled) {
    const original = WebAssembly.instantiateStreaming;
    WebAssembly.instantiateStreaming = async (source, imports) => {
      WebAssembly.instantiateStreaming = original;
      Promise.resolve(source).then((r) => r.body && r.body.cancel()).catch(() => {});
      const instance = await WebAssembly.instantiate(compiled, imports);
      return { instance, module: compiled };
    };
  }
  py = await loadPyodide({
    indexURL,
    packageBaseUrl: new URL("/wheels/", origin).href,
    stdout: (s) => log("py", s),
    stderr: (s) => log("py", s),
  });
  progress("synced-store:pyodide-loaded");
  await py.loadPackage(pyCfg.wheels.map((u) => new URL(u, origin).href),
    { messageCallback: () => {}, errorCallback: (s) => log("loadPackage", s) });
  progress("synced-store:wheels-loaded");
  const root = "/home/pyodide/synced_store_page";
  for (const [path, text] of Object.entries(bundle.files)) {
    const dir = (root + "/" + path).split("/").slice(0, -1).join("/");
    py.FS.mkdirTree(dir);
    py.FS.writeFile(root + "/" + path, text);
  }
  py.runPython(`import sys\nsys.path.insert(0, ${JSON.stringify(root)})`);
  mod = py.pyimport("_synced_store_bridge");
  progress("synced-store:engine-imported");
  return true;
}

function output() {
  return bridge ? JSON.parse(bridge.take_output()) : null;
}

function handle(method, args) {
  switch (method) {
    case "create": {
      const [spec, state, subs] = args;
      bridge = mod.Bridge(spec, state);
      for (const [id, table, scope] of subs) bridge.subscribe_table(id, table, scope);
      return bridge.pending();
    }
    case "connect":
    case "receive":
    case "disconnected":
    case "mutate":
    case "call_action":
    case "load_older":
    case "page_done":
    case "subscribe_table":
    case "unsubscribe":
      return bridge[method](...args) ?? null;
    default:
      throw new Error(`unknown engine method ${method}`);
  }
}

self.onmessage = (e) => {
  if ("wasmModule" in e.data) { resolveWasm(e.data.wasmModule); return; }
  const { id, method, args } = e.data;
  chain = chain.then(async () => {
    try {
      const result = method === "load" ? await load(...args) : handle(method, args);
      postMessage({ id, result, output: output() });
    } catch (err) {
      let out = null;
      try { out = output(); } catch (e2) { /* keep the first error */ }
      postMessage({ id, error: String(err && err.message ? err.message : err), output: out });
    }
  });
};
