"""Benchmarks (`make bench`): sizes, speeds and quality at realistic sizes."""
