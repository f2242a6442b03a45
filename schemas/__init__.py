"""The TFDV schema of the joined examples, built from their columns.

A dataset's schema is generated from its spec (config/dataset.py gives the
columns, `build_schema` the proto; `python -m pipeline.cli schema` writes it), never
kept by hand beside it. `columns.py` names what the pipeline writes. Environments:
RAW (the ExampleGen's joined examples) and DISTILL (after the BulkInferrer
appended the teacher columns).
"""

import functools
from typing import Sequence

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from schemas import columns

RAW = 'RAW'
DISTILL = 'DISTILL'
_TYPES = {'int': schema_pb2.INT, 'float': schema_pb2.FLOAT, 'bytes': schema_pb2.BYTES}
HEADER = ('# Generated from the dataset spec by `python -m pipeline.cli schema`; do '
          'not edit.\n')


def _feature(column: columns.Column) -> schema_pb2.Feature:
  f = schema_pb2.Feature(name=column.name, type=_TYPES[column.dtype])
  if column.required:
    f.presence.min_fraction = 1.0
    f.presence.min_count = 1
    f.shape.dim.add().size = 1
  else:
    # Optional columns (truth, the teacher's): absent from some examples.
    f.presence.min_count = 0
    f.value_count.min = f.value_count.max = column.width or 1
  if column.dtype == 'int':
    d = f.int_domain
    if column.min is not None:
      d.min = int(column.min)
    if column.max is not None:
      d.max = int(column.max)
    if column.kind == columns.Kind.CATEGORICAL:
      d.is_categorical = True
  elif column.dtype == 'float':
    d = f.float_domain
    if column.min is not None:
      d.min = float(column.min)
    if column.max is not None:
      d.max = float(column.max)
    d.disallow_nan = d.disallow_inf = True
  elif column.values is not None:
    f.string_domain.value.extend(column.values)
  if column.role == columns.Role.TEACHER:
    f.not_in_environment.append(RAW)
  return f


def build_schema(cols: Sequence[columns.Column]) -> schema_pb2.Schema:
  """The TFDV schema of examples with these columns (environments RAW, DISTILL)."""
  schema = schema_pb2.Schema()
  schema.default_environment.extend([RAW, DISTILL])
  for column in cols:
    schema.feature.append(_feature(column))
  return schema


def to_text(schema: schema_pb2.Schema) -> str:
  """The schema as the text ImportSchemaGen reads, with the generated header."""
  return HEADER + text_format.MessageToString(schema)


@functools.lru_cache(maxsize=None)
def _load(path: str):
  with open(path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def load_schema(path: str):
  """Returns a fresh copy of the schema proto at `path` (callers may modify it)."""
  schema = type(_load(path))()
  schema.CopyFrom(_load(path))
  return schema


def hint_width(path: str = '') -> int:
  """The teacher hint width the schema at `path` declares (the pipeline's
  constant when no path is given)."""
  if not path:
    return columns.HINT_WIDTH
  for feature in _load(path).feature:
    if feature.name == columns.TEACHER_HINT:
      return int(feature.value_count.max)
  raise ValueError(f'{path} does not declare {columns.TEACHER_HINT}')


def in_environment(feature, environment: str) -> bool:
  """TFDV's rule: a feature is in every default environment unless excluded."""
  if feature.in_environment:
    return environment in feature.in_environment
  return environment not in feature.not_in_environment
