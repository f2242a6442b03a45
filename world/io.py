"""Reads gzip TFRecords of tf.Example into numpy columns (tests, benchmarks)."""

import glob
import os
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np


def list_files(pattern: Union[str, Sequence[str]]) -> List[str]:
  """Files matching a glob, a directory (recursively) or a list of them."""
  patterns = [pattern] if isinstance(pattern, str) else list(pattern)
  out = []
  for p in patterns:
    if os.path.isdir(p):
      p = os.path.join(p, '**', '*.gz')
    out += sorted(glob.glob(p, recursive=True))
  return out


def _to_numpy(column) -> np.ndarray:
  """A list column of one or a fixed number of values -> [n] or [n, width]."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  lengths = np.diff(np.asarray(column.offsets))
  values = column.flatten().to_numpy(zero_copy_only=False)
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
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top
  records = list(records)
  if not records:
    return {}
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
  names = columns or batch.schema.names
  return {n: _to_numpy(batch.column(batch.schema.get_field_index(n)))
          for n in names}


def iter_records(paths: Sequence[str]) -> Iterable[bytes]:
  """The records of gzip TFRecord files, in file order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  dataset = tf.data.TFRecordDataset(list(paths), compression_type='GZIP')
  for batch in dataset.batch(8192).as_numpy_iterator():
    yield from batch


def read_examples(pattern: Union[str, Sequence[str]],
                  columns: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
  """Reads every example under `pattern` into numpy columns."""
  files = list_files(pattern)
  if not files:
    raise FileNotFoundError(f'no TFRecord files match {pattern}')
  return decode(iter_records(files), columns)
