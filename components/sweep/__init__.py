"""Sweep records: a sweep run writes its best hyperparameters under their
fingerprint; nightly runs resolve the newest for theirs (docs/architecture.md §13)."""
