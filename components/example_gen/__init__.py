"""ConversionLogExampleGen: the window [T - W, T) of clicks joined with the
conversions reported by T, split by time (docs/architecture.md §2-3)."""
