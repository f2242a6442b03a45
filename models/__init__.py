"""Model code split by concern: features, teacher, student, losses, run_fn adapters."""
