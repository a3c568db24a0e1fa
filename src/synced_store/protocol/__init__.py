"""Wire protocol: typed messages, encoding and strict decoding, close codes, the version.

Pure data; no I/O. Nothing outside this package builds or parses a frame. See
docs/protocol.md for the prose description of every message.
"""

from .codec import decode_client_message, decode_server_message, encode
from .codes import CloseCode, ErrorKind
from .messages import (
    Action,
    ActionResult,
    Binding,
    ClientMessage,
    Connect,
    Connected,
    DelOp,
    Error,
    MergeOp,
    Mutation,
    MutationErrorReport,
    PatchOp,
    Poke,
    Pull,
    Push,
    PushResponse,
    ServerMessage,
    SetOp,
)
from .version import MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION

__all__ = [
    "MAX_PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "PROTOCOL_VERSION",
    "Action",
    "ActionResult",
    "Binding",
    "ClientMessage",
    "CloseCode",
    "Connect",
    "Connected",
    "DelOp",
    "Error",
    "ErrorKind",
    "MergeOp",
    "Mutation",
    "MutationErrorReport",
    "PatchOp",
    "Poke",
    "Pull",
    "Push",
    "PushResponse",
    "ServerMessage",
    "SetOp",
    "decode_client_message",
    "decode_server_message",
    "encode",
]
