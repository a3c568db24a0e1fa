"""Protocol version.

History:
    1 (0.1.0) first version: connect / connected, push / push_response, poke (data-carrying,
      multi-part, with set / del / merge ops), action / action_result, error.
"""

from __future__ import annotations

__all__ = ["MAX_PROTOCOL_VERSION", "MIN_PROTOCOL_VERSION", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
MIN_PROTOCOL_VERSION = 1
MAX_PROTOCOL_VERSION = 1
