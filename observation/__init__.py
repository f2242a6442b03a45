"""The observation model: delays, observability, labels as of T, eval labels.

See docs/architecture.md §4.
"""
