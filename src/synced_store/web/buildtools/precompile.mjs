// Precompile the pure-Python files of wheels to CPython bytecode with Pyodide's own Python
// (run by `python -m synced_store.web.build` under Node). Writes copies of the wheels that also
// hold unchecked-hash .pyc files, so the page imports pydantic without compiling it each load.
// Usage: node precompile.mjs PYODIDE_DIR IN_DIR OUT_DIR WHEEL...
import { pathToFileURL } from "node:url";
const [pyDir, inDir, outDir, ...names] = process.argv.slice(2);
const { loadPyodide } = await import(pathToFileURL(pyDir + "/pyodide.mjs").href);
const py = await loadPyodide({ indexURL: pyDir + "/" });
for (const [mnt, root] of [["/in", inDir], ["/out", outDir]]) {
  py.FS.mkdirTree(mnt);
  py.FS.mount(py.FS.filesystems.NODEFS, { root }, mnt);
}
py.globals.set("names", py.toPy(names));
py.runPython(`
import importlib.util, site, sys, zipfile
from importlib._bootstrap_external import _code_to_hash_pyc
sp = site.getsitepackages()[0]
tag = sys.implementation.cache_tag
for name in names:
    with zipfile.ZipFile("/in/" + name) as zin, zipfile.ZipFile("/out/" + name, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name = None
        extra = []
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                record_name, record = info.filename, data
                continue
            zout.writestr(info, data)
            if info.filename.endswith(".py") and ".dist-info/" not in info.filename:
                code = compile(data, sp + "/" + info.filename, "exec", dont_inherit=True, optimize=0)
                pyc = _code_to_hash_pyc(code, importlib.util.source_hash(data), checked=False)
                d, _, f = info.filename.rpartition("/")
                target = (d + "/" if d else "") + "__pycache__/" + f[:-3] + "." + tag + ".pyc"
                zout.writestr(target, bytes(pyc))
                extra.append(target)
        if record_name:
            lines = record.decode().rstrip("\\n") + "\\n" + "".join(p + ",,\\n" for p in extra)
            zout.writestr(record_name, lines)
    print(name, len(extra), "pyc")
`);
