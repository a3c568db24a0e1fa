"""Fetch the browser runtime: npm ``pyodide`` and the pydantic wheels built for its ABI.

Usage::

    python -m synced_store.web.build [--out web-build] [--force]

Everything lands in ``web-build/`` (git-ignored)::

    web-build/pyodide/<version>/   the npm package's files (runtime, stdlib, lock file)
    web-build/wheels/              pydantic, pydantic-core (wasm) and their pure deps
    web-build/wheels-pyc/          the same wheels with bytecode precompiled by Pyodide's
                                   Python under Node (faster imports in the page; optional)
    web-build/manifest.json        what was fetched: versions, ABI, the wheels to load

Only the npm registry (``npm pack``) and PyPI (``pip download``) are contacted, here, once;
the server then serves these files itself and the page never leaves the machine. Pyodide and
the pydantic pair are pinned together: the wasm ``pydantic_core`` wheel's platform tag must
match the ``abi_version`` in ``pyodide-lock.json``, which this script reads and checks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "MICROPIP_VERSION",
    "PYDANTIC_VERSION",
    "PYODIDE_VERSION",
    "BuildInfo",
    "default_build_dir",
    "load_build",
    "main",
]

PYODIDE_VERSION = "314.0.7"
PYDANTIC_VERSION = "2.14.3"
MICROPIP_VERSION = "0.11.1"
#: The wire codec (protocol/) decodes server frames with msgspec; pinned as in pyproject.toml.
MSGSPEC_VERSION = "0.23.0"
#: The wheels the page loads, in this order (dependencies first).
_LOAD_ORDER = (
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
    "pydantic_core",
    "pydantic",
    "msgspec",
)


def default_build_dir() -> Path:
    """``$SYNCED_STORE_WEB_BUILD``, else ``./web-build``, else ``web-build`` at the repo root."""
    env = os.environ.get("SYNCED_STORE_WEB_BUILD")
    if env:
        return Path(env)
    cwd = Path.cwd() / "web-build"
    if (cwd / "manifest.json").is_file():
        return cwd
    repo = Path(__file__).resolve().parents[3] / "web-build"
    if (repo / "manifest.json").is_file():
        return repo
    return cwd


class BuildInfo:
    """A finished build: where the runtime and wheels are and which wheels to load."""

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root = root
        self.pyodide_version: str = data["pyodide_version"]
        self.abi: str = data["abi"]
        self.python: str = data["python"]
        self.wheels: list[str] = list(data["wheels"])
        self.wheels_subdir: str = data.get("wheels_dir", "wheels")

    @property
    def pyodide_dir(self) -> Path:
        """The directory holding ``pyodide.mjs`` etc."""
        return self.root / "pyodide" / self.pyodide_version

    @property
    def wheels_dir(self) -> Path:
        """The directory holding the wheels the page loads (precompiled when available)."""
        return self.root / self.wheels_subdir


def load_build(root: Path | None = None) -> BuildInfo | None:
    """The build in ``root`` (default :func:`default_build_dir`), or None if absent/incomplete."""
    root = root or default_build_dir()
    try:
        data = json.loads((root / "manifest.json").read_text())
        info = BuildInfo(root, data)
    except (OSError, ValueError, KeyError):
        return None
    if not (info.pyodide_dir / "pyodide.mjs").is_file():
        return None
    if not all((info.wheels_dir / w).is_file() for w in info.wheels):
        return None
    return info


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    return res.stdout


def _fetch_pyodide(out: Path, version: str) -> Path:
    dest = out / "pyodide" / version
    if (dest / "pyodide.mjs").is_file() and (dest / "pyodide-lock.json").is_file():
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to fetch the pyodide package (apt-get install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        stdout = _run(
            [npm, "pack", f"pyodide@{version}", "--silent", "--pack-destination", str(tmpdir)],
            cwd=tmpdir,
        )
        tgz = tmpdir / stdout.strip().splitlines()[-1]
        staging = out / "pyodide" / f".{version}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with tarfile.open(tgz) as tf:
            for member in tf.getmembers():
                if not member.isfile() or not member.name.startswith("package/"):
                    continue
                rel = Path(member.name[len("package/") :])
                if rel.is_absolute() or ".." in rel.parts:
                    continue
                src = tf.extractfile(member)
                assert src is not None
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f)
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    return dest


def _lock_info(pyodide_dir: Path) -> tuple[str, str]:
    lock = json.loads((pyodide_dir / "pyodide-lock.json").read_text())
    info = lock["info"]
    abi = str(info["abi_version"])
    python = ".".join(str(info["python"]).split(".")[:2])
    return abi, python


def _fetch_wheels(out: Path, abi: str, python: str) -> list[str]:
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--platform",
            f"pyemscripten_{abi}_wasm32",
            "--platform",
            "any",
            "--python-version",
            python,
            "--implementation",
            "cp",
            "-d",
            str(wheels),
            f"pydantic=={PYDANTIC_VERSION}",
            f"micropip=={MICROPIP_VERSION}",
            f"msgspec=={MSGSPEC_VERSION}",
        ]
    )
    names = sorted(p.name for p in wheels.glob("*.whl"))
    chosen: list[str] = []
    for dist in _LOAD_ORDER:
        found = [n for n in names if n.split("-")[0].lower() == dist]
        if not found:
            raise SystemExit(f"pip download produced no wheel for {dist}: {names}")
        chosen.append(found[-1])
    core = chosen[_LOAD_ORDER.index("pydantic_core")]
    if f"pyemscripten_{abi}_wasm32" not in core:
        raise SystemExit(f"pydantic_core wheel {core} is not built for Pyodide's ABI {abi}")
    for wasm in ("pydantic_core", "msgspec"):
        if f"pyemscripten_{abi}_wasm32" not in chosen[_LOAD_ORDER.index(wasm)]:
            raise SystemExit(f"{wasm} wheel is not built for Pyodide's ABI {abi}: {chosen}")
    pyd = chosen[_LOAD_ORDER.index("pydantic")]
    if f"-{PYDANTIC_VERSION}-" not in pyd:
        raise SystemExit(f"expected pydantic {PYDANTIC_VERSION}, got {pyd}")
    return chosen


def _precompile(out: Path, pyodide_dir: Path, wheels: list[str]) -> str:
    """Bytecode-compile the wheels with Pyodide's Python under Node; the dir to serve."""
    node = shutil.which("node")
    if node is None:
        print("node not found: serving wheels without precompiled bytecode", flush=True)
        return "wheels"
    dest = out / "wheels-pyc"
    staging = out / ".wheels-pyc.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    script = Path(__file__).parent / "buildtools" / "precompile.mjs"
    try:
        _run([node, str(script), str(pyodide_dir), str(out / "wheels"), str(staging), *wheels])
    except subprocess.CalledProcessError as exc:
        print(f"precompiling failed (serving plain wheels): {exc.stderr[-2000:]}", flush=True)
        shutil.rmtree(staging, ignore_errors=True)
        return "wheels"
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return "wheels-pyc"


def build(out: Path, *, force: bool = False, precompile: bool = True) -> BuildInfo:
    """Fetch (or reuse) everything into ``out``; returns the build."""
    out = out.resolve()
    if force:
        shutil.rmtree(out / "pyodide", ignore_errors=True)
        shutil.rmtree(out / "wheels", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pyodide_dir = _fetch_pyodide(out, PYODIDE_VERSION)
    abi, python = _lock_info(pyodide_dir)
    wheels = _fetch_wheels(out, abi, python)
    wheels_dir = "wheels"
    if precompile:
        done = out / "wheels-pyc"
        if not force and all((done / w).is_file() for w in wheels):
            wheels_dir = "wheels-pyc"
        else:
            wheels_dir = _precompile(out, pyodide_dir, wheels)
    data = {
        "pyodide_version": PYODIDE_VERSION,
        "abi": abi,
        "python": python,
        "wheels": wheels,
        "wheels_dir": wheels_dir,
        "pydantic_version": PYDANTIC_VERSION,
    }
    (out / "manifest.json").write_text(json.dumps(data, indent=2) + "\n")
    info = load_build(out)
    if info is None:
        raise SystemExit(f"build in {out} is incomplete")
    print(
        f"web build ready in {out} ({time.perf_counter() - t0:.1f} s): pyodide "
        f"{PYODIDE_VERSION} (ABI {abi}, Python {python}), wheels ({wheels_dir}): "
        f"{', '.join(wheels)}"
    )
    return info


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``synced-store web build``)."""
    parser = argparse.ArgumentParser(
        prog="synced-store web build",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="build directory (default: $SYNCED_STORE_WEB_BUILD or ./web-build)",
    )
    parser.add_argument("--force", action="store_true", help="fetch again even if present")
    parser.add_argument(
        "--no-precompile",
        action="store_true",
        help="serve the wheels as downloaded (no bytecode precompiled by Node)",
    )
    args = parser.parse_args(argv)
    out = args.out or Path(os.environ.get("SYNCED_STORE_WEB_BUILD") or "web-build")
    build(out, force=args.force, precompile=not args.no_precompile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
