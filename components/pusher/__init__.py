"""VersionedPusher: atomic, idempotent push of a blessed model (DESIGN §7)."""
