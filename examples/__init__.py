"""Example apps built on synced-store."""
