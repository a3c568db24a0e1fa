"""Canonical server state: one database per instance behind a small interface."""

from .base import InstanceStore
from .sqlite import SqliteInstanceStore, instance_path, validate_instance_id

__all__ = [
    "InstanceStore",
    "SqliteInstanceStore",
    "instance_path",
    "validate_instance_id",
]
