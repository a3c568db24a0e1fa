"""``python -m synced_store.cli``."""

from . import main

main()
