"""ServedBaseline: the Evaluator's baseline is what the serving directory serves."""
