"""The lastMutationID rule: already processed, next, or a gap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synced_store.core.sequencing import Sequence, classify


@pytest.mark.parametrize(
    ("mutation_id", "last", "expected"),
    [
        (1, 0, Sequence.NEXT),
        (5, 4, Sequence.NEXT),
        (4, 4, Sequence.ALREADY_PROCESSED),
        (1, 4, Sequence.ALREADY_PROCESSED),
        (0, 0, Sequence.ALREADY_PROCESSED),
        (6, 4, Sequence.GAP),
        (2, 0, Sequence.GAP),
    ],
)
def test_classify(mutation_id: int, last: int, expected: Sequence) -> None:
    assert classify(mutation_id, last) is expected


@settings(deadline=None)
@given(st.integers(0, 2**53), st.integers(0, 2**53))
def test_exactly_one_id_is_next(mutation_id: int, last: int) -> None:
    got = classify(mutation_id, last)
    assert (got is Sequence.NEXT) == (mutation_id == last + 1)
    assert (got is Sequence.ALREADY_PROCESSED) == (mutation_id <= last)
    assert (got is Sequence.GAP) == (mutation_id > last + 1)


@settings(deadline=None)
@given(st.lists(st.integers(1, 8), max_size=30))
def test_processing_a_stream_with_duplicates_and_gaps(ids: list[int]) -> None:
    """Applying the rule to any delivery order processes each id at most once, in order."""
    last = 0
    processed: list[int] = []
    for mid in ids:
        if classify(mid, last) is Sequence.NEXT:
            processed.append(mid)
            last = mid
    assert processed == list(range(1, last + 1))


def test_values_are_stable_strings() -> None:
    assert {s.value for s in Sequence} == {"already_processed", "next", "gap"}
