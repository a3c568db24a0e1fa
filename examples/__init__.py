"""Example apps built on synced-store: ``chat`` (the seed's chat-with-bot app, with its web page
and terminal client) and ``todo`` (the smallest complete app).

In a clone they are imported as ``examples`` from the repository root; the project's wheel ships
them as the package ``synced_store_examples`` (same files), which is where the ``synced-store
demo chat`` and ``synced-store chat`` commands find them (entry points in ``pyproject.toml``).
"""
