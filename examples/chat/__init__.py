"""The seed's chat-with-bot app: ``schema`` and ``mutators`` (shared with the browser),
``actions`` (server-only: ``callBot``) and ``app`` (the server's ``backend``)."""
