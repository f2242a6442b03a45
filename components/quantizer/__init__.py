"""Quantizer: post-training quantization of the student to TFLite.

See docs/architecture.md §6.
"""
