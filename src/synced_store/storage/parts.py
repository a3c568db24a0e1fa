"""Filling a catch-up part from batches of encoded rows (both backends' catch-ups)."""

from __future__ import annotations

__all__ = ["fill_part"]


def fill_part(batch: list[str], out: list[str], size: int, max_bytes: int) -> tuple[int, list[str]]:
    """Move rows of ``batch`` onto ``out`` (``size``: its text so far) until it holds about
    ``max_bytes`` (at least one row). Returns the new size and what is left of ``batch`` for
    the next part (empty when all of it was taken)."""
    for i, op in enumerate(batch):
        if size >= max_bytes and out:
            return size, batch[i:]
        out.append(op)
        size += len(op)
    return size, []
