"""The seed's chat-with-bot app.

- ``schema`` and ``mutators``: shared with the browser (they run in the page, in Pyodide);
- ``actions`` (server-only: ``callBot``) and ``app`` (the server's ``backend``);
- ``static/``: the web page (``index.html``, ``chat.js``, ``chat.css``), served by
  ``synced_store.web.routes`` under ``/_ss/app/``;
- ``terminal``: the terminal client; ``commands``: ``synced-store demo chat`` and
  ``synced-store chat``; ``screenshot``: takes ``docs/chat-screenshot.png``.
"""
