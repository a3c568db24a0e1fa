"""The client's config: the schema and the mutators, nothing else."""

from synced_store import define_client_config

from .shared import MUTATORS, schema

client_config = define_client_config(schema=schema, mutators=MUTATORS)
