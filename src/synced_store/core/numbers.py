"""The numbers a stored value may hold: finite, and integers within 64 bits."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ValidationError

__all__ = ["INT_MAX", "INT_MIN", "check_numbers"]

#: The integers a value may hold: 64-bit signed, what every JSON encoder on the way writes
#: (orjson on the server and the Python client). Browsers parse any integer, exactly only
#: up to 2**53.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def check_numbers(value: Any, what: str = "value") -> None:
    """Raise :class:`ValidationError` if ``value`` holds a non-finite float (NaN, Infinity:
    not JSON) or an integer outside 64 bits (not every JSON encoder on the way can write
    it). Walks containers without recursion; an object's own members in one pass first (a
    row is nearly always one flat object)."""
    stack: list[Any]
    if type(value) is dict:
        stack = []
        for v in value.values():
            t = type(v)
            if t is str:
                continue
            if t is float:
                if not math.isfinite(v):
                    raise ValidationError(f"invalid {what}: {v!r} is not a JSON number")
            elif t is int:
                if not INT_MIN <= v <= INT_MAX:
                    raise ValidationError(f"invalid {what}: integer {v} does not fit in 64 bits")
            elif t is dict or t is list or t is tuple:
                stack.append(v)
    else:
        stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is float:
            if not math.isfinite(v):
                raise ValidationError(f"invalid {what}: {v!r} is not a JSON number")
        elif t is int:
            if not INT_MIN <= v <= INT_MAX:
                raise ValidationError(f"invalid {what}: integer {v} does not fit in 64 bits")
        elif t is dict:
            stack.extend(v.values())
        elif t is list or t is tuple:
            stack.extend(v)
