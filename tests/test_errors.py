"""The exception tree: one root, a machine-readable kind per class, builtin parents."""

from __future__ import annotations

import inspect

import pytest

from synced_store import errors
from synced_store.errors import (
    ConnectionEndedError,
    ConnectionLost,
    KeyTooLargeError,
    MutationFailedError,
    StorageError,
    SyncedStoreError,
    UnknownNameError,
    ValidationError,
    ValueTooLargeError,
)
from synced_store.protocol import ErrorKind

CLASSES = [getattr(errors, name) for name in errors.__all__]


def test_every_exported_name_is_an_exception_class() -> None:
    assert all(inspect.isclass(c) and issubclass(c, Exception) for c in CLASSES)
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert defined == set(errors.__all__)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_derives_from_root_and_has_a_kind(cls: type[SyncedStoreError]) -> None:
    assert issubclass(cls, SyncedStoreError)
    assert isinstance(cls.kind, str)
    assert cls.kind
    assert cls.kind == cls.kind.lower()
    assert " " not in cls.kind


def test_kinds_are_unique() -> None:
    kinds = [c.kind for c in CLASSES]
    assert len(kinds) == len(set(kinds))


def test_every_class_is_in_the_docstring_tree() -> None:
    doc = errors.__doc__ or ""
    for cls in CLASSES:
        assert cls.__name__ in doc


def test_wire_kinds_match_error_kind_constants() -> None:
    assert ValidationError.kind == ErrorKind.INVALID_INPUT
    assert KeyTooLargeError.kind == ErrorKind.KEY_TOO_LARGE
    assert ValueTooLargeError.kind == ErrorKind.VALUE_TOO_LARGE
    assert UnknownNameError.kind == ErrorKind.UNKNOWN_NAME
    assert errors.PermissionDeniedError.kind == ErrorKind.PERMISSION_DENIED
    assert errors.MutatorError.kind == ErrorKind.MUTATOR_ERROR
    assert errors.ProtocolError.kind == ErrorKind.BAD_MESSAGE
    assert errors.ActionError.kind == ErrorKind.ACTION_FAILED


def test_builtin_parents() -> None:
    assert issubclass(ValidationError, ValueError)
    assert issubclass(KeyTooLargeError, ValidationError)
    assert issubclass(ValueTooLargeError, ValidationError)
    assert issubclass(UnknownNameError, KeyError)
    with pytest.raises(ValueError, match="bad"):
        raise ValidationError("bad")


def test_unknown_name_error_str_is_not_quoted() -> None:
    assert str(UnknownNameError("unknown table 'x'")) == "unknown table 'x'"
    assert str(UnknownNameError()) == ""


def test_mutation_failed_error_fields() -> None:
    e = MutationFailedError(7, "sendMessage", "invalid_input", "text: too long")
    assert (e.mutation_id, e.name, e.error_kind, e.message) == (
        7,
        "sendMessage",
        "invalid_input",
        "text: too long",
    )
    assert str(e) == "mutation 7 (sendMessage) failed on the server: text: too long"
    assert e.kind == "mutation_failed"


def test_connection_ended_error_fields() -> None:
    e = ConnectionEndedError("kicked", "another tab connected")
    assert (e.reason, e.detail) == ("kicked", "another tab connected")
    assert str(e) == "connection ended: kicked (another tab connected)"
    bare = ConnectionEndedError("auth_failed")
    assert bare.detail == ""
    assert str(bare) == "connection ended: auth_failed"


def test_connection_lost_fields_and_place_in_the_tree() -> None:
    e = ConnectionLost(1006, "no close frame")
    assert (e.code, e.reason, e.kind) == (1006, "no close frame", "connection_lost")
    assert str(e) == "connection closed (1006: no close frame)"
    assert str(ConnectionLost(1001)) == "connection closed (1001)"
    assert isinstance(e, SyncedStoreError)
    assert not isinstance(e, ConnectionEndedError)  # a lost connection is retried, not final
    from synced_store.client import ConnectionLost as from_client
    from synced_store.client.transport import ConnectionLost as from_transport

    assert from_client is from_transport is ConnectionLost


def test_storage_error_transient_flag() -> None:
    assert StorageError("busy", transient=True).transient
    assert not StorageError("corrupt", transient=False).transient
    with pytest.raises(TypeError):
        StorageError("no flag")  # type: ignore[call-arg]
