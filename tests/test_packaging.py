"""The wheel: the whole library, the shell's files, and the example apps as
``synced_store_examples`` with the entry points of their commands (so ``synced-store demo chat``
works after a plain ``pip install``), and nothing else at the top level."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "synced_store"
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    # Build from a copy, so the build's own files (build/, *.egg-info) never land in the repo.
    tree = tmp_path_factory.mktemp("tree")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=ignore)
    shutil.copytree(EXAMPLES, tree / "examples", ignore=ignore)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("synced_store-*.whl")
    return zipfile.ZipFile(built)


def _names(wheel: zipfile.ZipFile) -> set[str]:
    return set(wheel.namelist())


def test_the_wheel_carries_every_module_of_the_library(wheel: zipfile.ZipFile) -> None:
    names = _names(wheel)
    sources = {f"synced_store/{p.relative_to(SRC).as_posix()}" for p in SRC.rglob("*.py")}
    assert sources - names == set()  # a new subpackage must be listed in pyproject.toml
    static = ("synced-store.js", "protocol.js", "persist.js", "engine-worker.js")
    for data in ("py.typed", *(f"web/static/{name}" for name in static)):
        assert f"synced_store/{data}" in names


def test_the_library_carries_no_example_code(wheel: zipfile.ZipFile) -> None:
    library = [n for n in _names(wheel) if n.startswith("synced_store/")]
    assert [n for n in library if "chat" in n.rsplit("/", 1)[-1]] == []
    assert [n for n in library if n.endswith(".html")] == []


def test_the_examples_ship_as_synced_store_examples(wheel: zipfile.ZipFile) -> None:
    names = _names(wheel)
    sources = {
        f"synced_store_examples/{p.relative_to(EXAMPLES).as_posix()}"
        for p in EXAMPLES.rglob("*")
        if p.suffix in (".py", ".html", ".js", ".css") and "__pycache__" not in p.parts
    }
    assert "synced_store_examples/chat/static/index.html" in sources
    assert sources - names == set()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {
        "synced_store",
        "synced_store_examples",
    }


def test_the_wheel_registers_the_example_commands(wheel: zipfile.ZipFile) -> None:
    [path] = [n for n in _names(wheel) if n.endswith(".dist-info/entry_points.txt")]
    eps = configparser.ConfigParser()
    eps.read_string(wheel.read(path).decode())
    assert eps["console_scripts"]["synced-store"] == "synced_store.cli:main"
    assert eps["synced_store.demos"]["chat"] == "synced_store_examples.chat.commands:demo_chat"
    assert eps["synced_store.commands"]["chat"] == "synced_store_examples.chat.commands:chat"
    for section in ("synced_store.demos", "synced_store.commands"):
        for value in eps[section].values():
            module = value.split(":")[0].replace(".", "/") + ".py"
            assert module in _names(wheel), value
