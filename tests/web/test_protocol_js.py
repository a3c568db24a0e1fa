"""The browser shell's protocol.js against the shared vectors: runs ``node --test tests/js/``.

tests/protocol/test_vectors.py runs the same vectors (tests/vectors/*.json) against the Python
codec and engine, so the two receive paths cannot drift apart. CI installs Node (.ci/run) and
this test fails there without it; elsewhere it skips, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JS_TESTS = REPO / "tests" / "js"


def test_protocol_js_passes_the_shared_vectors() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed: CI must run the JS protocol tests")
        pytest.skip("node is not installed: the JS protocol tests (tests/js) did not run")
    # The test files are named explicitly: how a directory argument is expanded changed
    # between Node versions.
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, "no tests in tests/js"
    proc = subprocess.run(
        [node, "--test", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = [line for line in proc.stdout.splitlines() if line.startswith(("# pass", "# fail"))]
    assert proc.returncode == 0, (
        f"node --test failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    )
    assert "# fail 0" in summary, summary
    assert not any(line == "# pass 0" for line in summary), summary
