"""ConversionLogExampleGen: the window [T - W, T) of clicks joined with the
conversions reported by T, split by time (DESIGN §2-3)."""
