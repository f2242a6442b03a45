"""Promotion: two of three areas (loss and bias, business, latency) beyond their noise."""
