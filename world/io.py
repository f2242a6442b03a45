"""Reads gzip TFRecords of tf.Example into numpy columns (tests, benchmarks)."""

import glob
import os
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from schemas import codec


def list_files(pattern: Union[str, Sequence[str]]) -> List[str]:
  """Files matching a glob, a directory (recursively) or a list of them."""
  patterns = [pattern] if isinstance(pattern, str) else list(pattern)
  out = []
  for p in patterns:
    if os.path.isdir(p):
      p = os.path.join(p, '**', '*.gz')
    out += sorted(glob.glob(p, recursive=True))
  return out


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
  return codec.decode(iter_records(files), columns)
