"""Quantizer: post-training quantization of the student to TFLite (DESIGN §6)."""
