"""The one reader of example files: gzip TFRecords of tf.Example, local or gs://.

Listing goes through tf.io.gfile, so the same code reads a local directory and a
bucket. Executors, the benchmark and the tests read examples through here.
"""

import os
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from schemas import codec

Patterns = Union[str, Sequence[str]]
# Inside a directory, the record files (the generator's manifest is not one).
RECORD_SUFFIX = '.gz'


def list_files(patterns: Patterns) -> List[str]:
  """Files matching globs or directories (walked recursively for *.gz), sorted.

  Raises:
    FileNotFoundError: nothing matches.
  """
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  files = []
  for pattern in patterns:
    if tf.io.gfile.isdir(pattern):
      files += [os.path.join(d, f) for d, _, names in tf.io.gfile.walk(pattern)
                for f in names if f.endswith(RECORD_SUFFIX)]
    else:
      files += tf.io.gfile.glob(pattern)
  if not files:
    raise FileNotFoundError(f'no TFRecord files match {patterns}')
  return sorted(files)


def iter_batches(files: Sequence[str], batch_size: int = 8192) -> Iterable[np.ndarray]:
  """Serialized records of gzip TFRecord files in file order, in numpy batches."""
  dataset = tf.data.TFRecordDataset(list(files), compression_type='GZIP')
  yield from dataset.batch(batch_size).as_numpy_iterator()


def iter_records(files: Sequence[str]) -> Iterable[bytes]:
  """The serialized records of gzip TFRecord files, in file order."""
  for batch in iter_batches(files):
    yield from batch


def read_records(patterns: Patterns, limit: int = 0) -> List[bytes]:
  """The serialized records under `patterns` (at most `limit`; 0: all)."""
  out = []
  for record in iter_records(list_files(patterns)):
    out.append(record)
    if limit and len(out) >= limit:
      break
  return out


def read_examples(patterns: Patterns,
                  columns: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
  """Every example under `patterns` as numpy columns (all, or `columns`)."""
  return codec.decode(iter_records(list_files(patterns)), columns)
