"""Instance ids: what every storage backend accepts (and uses as a file name or a key)."""

from __future__ import annotations

import re

from ..errors import ValidationError

__all__ = ["validate_instance_id"]

_INSTANCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def validate_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is 1-128 chars of ``[A-Za-z0-9_.-]`` not starting with a
    dot, dash or underscore; raise :class:`ValidationError` otherwise (no path tricks)."""
    if (
        not isinstance(instance_id, str)
        or not _INSTANCE_RE.fullmatch(instance_id)
        or ".." in instance_id
    ):
        raise ValidationError(f"invalid instance id {instance_id!r:.80}")
    return instance_id
