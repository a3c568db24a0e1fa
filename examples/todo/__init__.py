"""A todo list: the smallest complete synced-store app.

``backend`` is the BackendConfig to serve (``synced-store serve examples.todo:backend``);
``client.py`` is a script that connects to a running server. See README.md.
"""

from .app import Todo, backend, schema

__all__ = ["Todo", "backend", "schema"]
