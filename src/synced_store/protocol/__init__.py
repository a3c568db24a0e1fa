"""Wire protocol: message shapes, strict decoding, close codes and the protocol version.

Pure data; no I/O. See docs/protocol.md for the prose description of every message.
"""

from .codec import decode_client_message, decode_server_message, encode
from .codes import CloseCode, ErrorKind
from .version import MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION

__all__ = [
    "MAX_PROTOCOL_VERSION",
    "MIN_PROTOCOL_VERSION",
    "PROTOCOL_VERSION",
    "CloseCode",
    "ErrorKind",
    "decode_client_message",
    "decode_server_message",
    "encode",
]
