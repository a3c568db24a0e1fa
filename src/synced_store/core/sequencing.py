"""The lastMutationID rule, in one place.

For each mutation the server compares its id with the client's stored ``last_mutation_id``:
already processed (skip it), the next one (run it), or a gap (refuse the rest of the push).
A permanently failing mutation still counts as processed, so a client can never deadlock.
A mutation named :data:`SKIP` is processed without running anything: a client sends it for an
id whose mutation a later one superseded (same dedupe key), so its ids stay contiguous.
"""

from __future__ import annotations

from enum import Enum

from ..protocol.messages import SKIP

__all__ = ["SKIP", "Sequence", "classify"]


class Sequence(Enum):
    """Where a mutation id stands relative to the client's last processed id."""

    ALREADY_PROCESSED = "already_processed"
    NEXT = "next"
    GAP = "gap"


def classify(mutation_id: int, last_mutation_id: int) -> Sequence:
    """Classify ``mutation_id`` against ``last_mutation_id``."""
    if mutation_id <= last_mutation_id:
        return Sequence.ALREADY_PROCESSED
    if mutation_id == last_mutation_id + 1:
        return Sequence.NEXT
    return Sequence.GAP
