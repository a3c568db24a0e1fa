"""An app split the way define_client_config expects: ``shared`` (schema and mutators),
``client`` (the client config), ``backend`` (actions, hooks and server imports)."""
