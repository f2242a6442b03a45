"""tf.Example encoding of columnar data, and back (one value list per feature).

`encode` is deterministic: the same columns give the same bytes (the generator's
reproducibility and the ExampleGen's output rely on it). `decode` uses tfx_bsl's
decoder, the one TFX components use, so tests see the types TFX sees.
"""

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx_bsl.coders import example_coder


def encode(cols: Dict[str, np.ndarray]) -> List[bytes]:
  """Serialises equal-length int64 / float32 / str columns as tf.Examples.

  One value per feature.

  Same columns in, same bytes out: protobuf's C++ encoders write the features map
  in hash order, which varies between processes, so the Example wire format is
  assembled with TensorFlow's `encode_proto` op, features in the given order.
  """
  n = len(next(iter(cols.values())))
  ones = tf.ones([n, 1], tf.int32)
  none = tf.zeros([n, 0], tf.string)
  entries = []
  for name, values in cols.items():
    values = np.asarray(values).reshape(n, 1)
    if values.dtype == object or values.dtype.kind in 'SU':
      field, lists = 0, tf.io.encode_proto(ones, [values.astype(str).astype(object)],
                                           ['value'], 'tensorflow.BytesList')
    elif values.dtype == np.int64:
      field, lists = 2, tf.io.encode_proto(ones, [values], ['value'],
                                           'tensorflow.Int64List')
    elif values.dtype == np.float32:
      field, lists = 1, tf.io.encode_proto(ones, [values], ['value'],
                                           'tensorflow.FloatList')
    else:
      raise TypeError(f'{name}: only int64, float32 and string columns, got '
                      f'{values.dtype}')
    sizes = np.zeros((n, 3), np.int32)
    sizes[:, field] = 1  # Feature oneof: bytes_list, float_list, int64_list
    slots = [none, none, none]
    slots[field] = tf.reshape(lists, [n, 1])
    feature = tf.io.encode_proto(sizes, slots,
                                 ['bytes_list', 'float_list', 'int64_list'],
                                 'tensorflow.Feature')
    entries.append(tf.io.encode_proto(
        tf.fill([n, 2], 1), [tf.fill([n, 1], name), tf.reshape(feature, [n, 1])],
        ['key', 'value'], 'tensorflow.Features.FeatureEntry'))
  features = tf.io.encode_proto(tf.fill([n, 1], len(entries)),
                                [tf.stack(entries, axis=1)], ['feature'],
                                'tensorflow.Features')
  return list(tf.io.encode_proto(ones, [tf.reshape(features, [n, 1])],
                                 ['features'], 'tensorflow.Example').numpy())


def _to_numpy(column) -> np.ndarray:
  """A list column of one or a fixed number of values -> [n] or [n, width]."""
  lengths = np.diff(np.asarray(column.offsets))
  values = np.array(column.flatten().to_numpy(zero_copy_only=False))  # writable
  if pa.types.is_binary(column.type.value_type) or pa.types.is_large_binary(
      column.type.value_type):
    values = np.array([v.decode() for v in values], dtype=object)
  if len(lengths) and (lengths != lengths[0]).any():
    raise ValueError(f'column has varying lengths {sorted(set(lengths))}')
  width = int(lengths[0]) if len(lengths) else 1
  return values if width == 1 else values.reshape(-1, width)


def decode(records: Iterable[bytes],
           columns: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
  """Serialized tf.Examples -> column name -> numpy array."""
  records = list(records)
  if not records:
    return {}
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
  names = columns or batch.schema.names
  return {n: _to_numpy(batch.column(batch.schema.get_field_index(n)))
          for n in names}


# String ids become int64 ids at ingestion with this hash (the serving graph has
# no string ops): FarmHash's Fingerprint64 of the UTF-8 bytes modulo 2^63 - 1, as
# TensorFlow's tf.strings.to_hash_bucket_fast computes it. A serving system
# computes the same with farmhash::Fingerprint64 (the serving contract,
# config/dataset.py contract_markdown).
HASH_BUCKETS = 2**63 - 1


def hash_strings(values) -> np.ndarray:
  """int64 ids in [0, 2^63 - 1) of strings (the documented hash)."""
  values = np.asarray(values, dtype=object)
  if not len(values):
    return np.zeros(0, np.int64)
  return tf.strings.to_hash_bucket_fast(values.astype(str).tolist(),
                                        HASH_BUCKETS).numpy().astype(np.int64)
