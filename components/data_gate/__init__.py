"""DataGate: stops the run when ExampleValidator found anomalies (DESIGN §2)."""
