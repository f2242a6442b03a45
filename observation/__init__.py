"""The observation model (DESIGN §4): delays, observability and labels as of T."""
