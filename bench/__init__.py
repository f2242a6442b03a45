"""Benchmarks (`make bench`): sizes, speeds and quality at realistic sizes."""

import os

# TFX 1.16 needs Keras 2 (tf-keras), and TensorFlow picks its Keras from this
# variable when it is first imported. Python imports this package before any
# `bench.x` entry point (`python -m bench.quality_bench` etc.), so setting it here
# lets the bench modules import TensorFlow/TFX at the top. The Makefile sets it too.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
