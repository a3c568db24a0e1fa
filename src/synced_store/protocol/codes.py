"""WebSocket close codes and machine-readable error kinds (part of the protocol)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

__all__ = ["END_REASONS", "RECONNECT_ERROR_KINDS", "TERMINAL_CODES", "CloseCode", "ErrorKind"]


class CloseCode(IntEnum):
    """Close codes. Below 4000 the client reconnects with backoff; 4000-4005 are terminal."""

    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006
    #: The client broke a policy that reconnecting later may fix: it sent faster than its
    #: rate limit, or did not read what the server sent within the send timeout.
    POLICY_VIOLATION = 1008
    #: A WebSocket message was larger than the server accepts (sent by the WebSocket layer).
    MESSAGE_TOO_BIG = 1009
    #: The instance's storage failed (it reopens with backoff) or the server hit a bug.
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    #: The server is at capacity (open instances, connections): try again later.
    TRY_AGAIN_LATER = 1013
    #: Another connection with the same client id replaced this one.
    KICKED = 4000
    #: The token was rejected.
    AUTH_FAILED = 4001
    #: The client speaks a protocol version this server does not support (reload needed).
    VERSION_MISMATCH = 4002
    #: The client sent a malformed or illegal frame.
    BAD_MESSAGE = 4003
    #: The instance id is invalid.
    BAD_INSTANCE = 4004
    #: The client's schema version differs from the server's; it must clear its local data.
    SCHEMA_MISMATCH = 4005


TERMINAL_CODES = frozenset(c for c in CloseCode if c >= 4000)

#: The ``endReason`` a client reports for each terminal close code.
END_REASONS = {
    CloseCode.KICKED: "kicked",
    CloseCode.AUTH_FAILED: "auth_failed",
    CloseCode.VERSION_MISMATCH: "version_mismatch",
    CloseCode.BAD_MESSAGE: "bad_message",
    CloseCode.BAD_INSTANCE: "bad_instance",
    CloseCode.SCHEMA_MISMATCH: "schema_version_mismatch",
}


class ErrorKind(StrEnum):
    """``kind`` of errors sent to clients (``error`` frames, failed mutations, failed
    actions). Members are strings: they compare equal to (and encode as) their values."""

    BAD_MESSAGE = "bad_message"
    UNKNOWN_NAME = "unknown_name"
    INVALID_INPUT = "invalid_input"
    KEY_TOO_LARGE = "key_too_large"
    VALUE_TOO_LARGE = "value_too_large"
    VALUE_TOO_DEEP = "value_too_deep"
    PERMISSION_DENIED = "permission_denied"
    MUTATOR_ERROR = "mutator_error"
    MUTATION_ID_GAP = "mutation_id_gap"
    STORAGE_BUSY = "storage_busy"
    QUOTA_EXCEEDED = "quota_exceeded"
    ACTION_FAILED = "action_failed"


#: ``error`` frames after which the client reconnects: the server could not process a push
#: (a gap in mutation ids, a busy database); the new ``connected`` tells the client the server's
#: ``last_mutation_id`` and it pushes again from there.
RECONNECT_ERROR_KINDS = frozenset({ErrorKind.MUTATION_ID_GAP, ErrorKind.STORAGE_BUSY})
