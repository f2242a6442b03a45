"""Features: the Transform preprocessing_fn and raw parsing specs.

See docs/architecture.md §2 and §5.

Which features there are is the dataset spec's (config/dataset.py): a feature is a
`schemas.columns.Column` with its kind and bucket count. The serving path is
converted to TFLite with builtin ops only, which have no hash tables: no TFT
vocabularies, bucketize or string hashing (string ids are hashed to int64 ids at
ingestion). Categoricals are int64 ids folded into their bucket count with
floormod; numerics are z-scored, heavy-tailed ones after log1p. Everything is a
dense [batch, 1] tensor.
"""

import dataclasses
from typing import Any, Dict, List, Sequence

import tensorflow as tf
import tensorflow_transform as tft

from schemas import columns

_DTYPES = {'int': tf.int64, 'float': tf.float32, 'bytes': tf.string}
# Transform's custom_config key holding the model features (every feature the
# teacher reads; the student's are a subset).
FEATURES_KEY = 'features'


def dtype(column: columns.Column) -> tf.dtypes.DType:
  return _DTYPES[column.dtype]


def raw_feature_spec(cols: Sequence[columns.Column]
                     ) -> Dict[str, tf.io.FixedLenFeature]:
  """Dense [1] parsing spec of scalar columns (no default: missing is an error)."""
  return {c.name: tf.io.FixedLenFeature([1], dtype(c)) for c in cols}


def names(cols: Sequence[columns.Column]) -> List[str]:
  return [c.name for c in cols]


def transform_feature(col: columns.Column, x: tf.Tensor) -> tf.Tensor:
  """The TFLite-builtin transform of one model feature."""
  if col.kind == columns.Kind.CATEGORICAL:
    return tf.math.floormod(tf.cast(x, tf.int64), col.buckets)
  x = tf.cast(x, tf.float32)
  if col.kind == columns.Kind.LOG_NUMERIC:
    x = tf.math.log1p(tf.maximum(x, 0.0))
  return tft.scale_to_z_score(x)


def transform_config(cols: Sequence[columns.Column]) -> Dict[str, Any]:
  """Transform's custom_config: the features to transform."""
  return {FEATURES_KEY: [{'name': c.name, 'role': c.role.value, 'dtype': c.dtype,
                          'kind': c.kind.value, 'buckets': c.buckets}
                         for c in cols]}


def from_transform_config(custom_config: Dict[str, Any]) -> List[columns.Column]:
  return [columns.Column(d['name'], columns.Role(d['role']), d['dtype'],
                         columns.Kind(d['kind']), buckets=d['buckets'])
          for d in custom_config[FEATURES_KEY]]


def preprocessing_fn(inputs: Dict[str, tf.Tensor],
                     custom_config: Dict[str, Any]) -> Dict[str, tf.Tensor]:
  """Transform's preprocessing_fn: every model feature, by its kind.

  Teacher-only features are transformed here too (the teacher reads them); the
  student's serving signature feeds only serving features, and the transform
  graph is pruned to what those need. `custom_config` names the features
  (`transform_config`), so one function serves every dataset.
  """
  return {c.name: transform_feature(c, inputs[c.name])
          for c in from_transform_config(custom_config)}


def same_features(a: Sequence[columns.Column], b: Sequence[columns.Column]) -> bool:
  """Whether two feature lists describe the same model inputs."""
  def key(c):
    return dataclasses.replace(c, group=None, min=None, max=None)
  return [key(c) for c in a] == [key(c) for c in b]
