"""Canonical server state: one database per instance behind a small interface."""

from .base import InstanceStore, PullResult
from .sqlite import SqliteInstanceStore, instance_path, validate_instance_id

__all__ = [
    "InstanceStore",
    "PullResult",
    "SqliteInstanceStore",
    "instance_path",
    "validate_instance_id",
]
