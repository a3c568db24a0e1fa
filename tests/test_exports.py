"""The public API: sorted, unique ``__all__`` lists whose every name imports."""

from __future__ import annotations

import importlib
import re

import pytest

MODULES = ["synced_store", "synced_store.testing", "synced_store.protocol"]


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 enforces: SCREAMING_CASE, then CamelCase, then the rest."""
    bare = name.lstrip("_")
    if len(bare) > 1 and re.fullmatch(r"[A-Z0-9_]+", bare) and any(c.isalpha() for c in bare):
        return (0, name)
    if bare[:1].isupper():
        return (1, name)
    return (2, name)


@pytest.mark.parametrize("module", MODULES)
def test_all_is_sorted_and_unique(module: str) -> None:
    names = importlib.import_module(module).__all__
    assert len(names) == len(set(names)), "duplicates in __all__"
    assert list(names) == sorted(names, key=isort_key)


@pytest.mark.parametrize("module", MODULES)
def test_every_name_in_all_is_importable(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert missing == []
    namespace: dict[str, object] = {}
    exec(f"from {module} import *", namespace)  # the star-import itself is the test
    assert set(mod.__all__) <= set(namespace)


def test_top_level_exports_the_documented_api() -> None:
    import synced_store

    for name in [
        "define_schema",
        "table",
        "singleton_table",
        "item",
        "define_backend_config",
        "EntryKey",
        "SyncedStoreError",
        "ValidationError",
        "MutationFailedError",
    ]:
        assert name in synced_store.__all__
    assert isinstance(synced_store.__version__, str)


def test_testing_exports_the_harness() -> None:
    import synced_store.testing

    assert "create_test_harness" in synced_store.testing.__all__
    assert callable(synced_store.testing.create_test_harness)


def test_errors_module_all_matches_its_classes() -> None:
    from synced_store import errors

    assert errors.__all__ == sorted(errors.__all__)
    import synced_store

    assert set(errors.__all__) <= set(synced_store.__all__)
