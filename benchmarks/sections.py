"""Sections of ``docs/benchmarks.md`` owned by one benchmark each.

A section is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. A benchmark run
replaces its own section (appending it the first time), and the main runner carries every
section over when it rewrites the file, so each number stays with the run that measured it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

__all__ = ["DOC", "carry_over", "run_facts", "write_section"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_BLOCK = re.compile(r"<!-- (?P<name>[a-z-]+):start -->\n.*?<!-- (?P=name):end -->\n", re.S)


def _block(name: str, markdown: str) -> str:
    return f"<!-- {name}:start -->\n{markdown.rstrip()}\n<!-- {name}:end -->\n"


def write_section(name: str, markdown: str, doc: Path = DOC) -> None:
    """Replace (or append) section ``name`` of ``doc``."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    new = _block(name, markdown)
    pattern = re.compile(rf"<!-- {name}:start -->\n.*?<!-- {name}:end -->\n", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    else:
        text = text.rstrip() + "\n\n" + new
    doc.write_text(text)


def carry_over(old_text: str, doc: Path = DOC) -> None:
    """Put the sections of ``old_text`` back into the freshly written ``doc``."""
    for m in _BLOCK.finditer(old_text):
        body = m.group(0).split("\n", 1)[1].rsplit("<!--", 1)[0]
        write_section(m.group("name"), body, doc)


def run_facts(command: str) -> str:
    """A line saying when and how a section's numbers were measured."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"Measured {when} with `{command}` (load average at the end: {load})."
