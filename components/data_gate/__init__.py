"""DataGate: stops the run when ExampleValidator found anomalies.

See docs/architecture.md §2.
"""
