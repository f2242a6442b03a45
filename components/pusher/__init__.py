"""VersionedPusher: atomic, idempotent push of a blessed model.

See docs/architecture.md §7.
"""
