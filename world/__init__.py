"""The synthetic world: a seeded, streaming generator of click and conversion logs."""
