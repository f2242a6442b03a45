"""BaselineCheck: a distilled run needs a production baseline to be gated against."""
