"""The curated TFDV schema and the column-role map (the one source of column names).

`schema.pbtxt` is what ImportSchemaGen imports; `columns.py` names every column and
its role. Environments: RAW (the ExampleGen's joined examples) and DISTILL (after
the BulkInferrer appended the teacher columns).
"""

import functools
import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from schemas import columns

SCHEMA_DIR = os.path.dirname(os.path.abspath(__file__))
SCHEMA_PATH = os.path.join(SCHEMA_DIR, 'schema.pbtxt')
RAW = 'RAW'
DISTILL = 'DISTILL'


@functools.lru_cache(maxsize=None)
def _load(path: str):
  with open(path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def load_schema(path: str = SCHEMA_PATH):
  """Returns a fresh copy of the schema proto (callers may modify it)."""
  schema = type(_load(path))()
  schema.CopyFrom(_load(path))
  return schema


def hint_width(path: str = SCHEMA_PATH) -> int:
  """The teacher hint width the schema declares (value count of teacher_hint)."""
  for feature in _load(path).feature:
    if feature.name == columns.TEACHER_HINT:
      return int(feature.value_count.max)
  raise ValueError(f'{path} does not declare {columns.TEACHER_HINT}')


def in_environment(feature, environment: str) -> bool:
  """TFDV's rule: a feature is in every default environment unless excluded."""
  if feature.in_environment:
    return environment in feature.in_environment
  return environment not in feature.not_in_environment
