"""Features: the Transform preprocessing_fn and raw parsing specs.

See docs/architecture.md §2 and §5.

The serving path is converted to TFLite with builtin ops only, which have no hash
tables: no TFT vocabularies, bucketize or string hashing. Categoricals are int64
ids folded into their bucket count with floormod; numerics are z-scored, heavy-
tailed ones after log1p. Everything is a dense [batch, 1] tensor.
"""

from typing import Dict, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from schemas import columns

SERVING_FEATURES = columns.SERVING_FEATURES
TEACHER_FEATURES = columns.SERVING_FEATURES + columns.TEACHER_ONLY_FEATURES
_DTYPES = {'int': tf.int64, 'float': tf.float32, 'bytes': tf.string}


def dtype(name: str) -> tf.dtypes.DType:
  return _DTYPES[columns.BY_NAME[name].dtype]


def raw_feature_spec(names: Sequence[str]) -> Dict[str, tf.io.FixedLenFeature]:
  """Dense [1] parsing spec of scalar columns (no default: missing is an error)."""
  return {n: tf.io.FixedLenFeature([1], dtype(n)) for n in names}


def transform_feature(name: str, x: tf.Tensor) -> tf.Tensor:
  """The TFLite-builtin transform of one model feature."""
  col = columns.BY_NAME[name]
  if col.kind == columns.Kind.CATEGORICAL:
    return tf.math.floormod(tf.cast(x, tf.int64), col.buckets)
  x = tf.cast(x, tf.float32)
  if col.kind == columns.Kind.LOG_NUMERIC:
    x = tf.math.log1p(tf.maximum(x, 0.0))
  return tft.scale_to_z_score(x)


def preprocessing_fn(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  """Transform's preprocessing_fn: every model feature, by its role-map kind.

  Teacher-only features are transformed here too (the teacher reads them); the
  student's serving signature feeds only serving features, and the transform
  graph is pruned to what those need.
  """
  return {n: transform_feature(n, inputs[n]) for n in TEACHER_FEATURES}
