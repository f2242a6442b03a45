"""The logs' input rules: what a file and its rows must be, and what the join does
with copies, early and excessive conversions (docs/architecture.md §3).

Pure logic over paths, records and numpy columns; the executor moves the rows.
Every failure is an `InputError` whose message is one line naming the file (or
partition), the column and the rule broken, so a night stops before anything is
trained and its log says where to look.

Rules per log column come from the curated schema (schemas/schema.pbtxt): its
type, one value per row, presence (truth columns are optional), finiteness and
domain. The conversion log's columns borrow the rule of the click-log column they
mirror (`conversion_id` and `click_id`: ids >= 0; `conversion_ts`: `click_ts`).
"""

import dataclasses
import datetime
import functools
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.coders import example_coder

import schemas
from schemas import columns
from schemas import layout


class InputError(ValueError):
  """A log file or row breaks the data contract (one line: file, column, rule)."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one log column must hold in every row."""
  column: str
  dtype: str  # 'int', 'float' or 'bytes'
  required: bool
  min: Optional[float] = None
  max: Optional[float] = None
  finite: bool = False
  values: Optional[Tuple[str, ...]] = None  # a string domain


_SCHEMA_TYPES = {schema_pb2.INT: 'int', schema_pb2.FLOAT: 'float',
                 schema_pb2.BYTES: 'bytes'}
# Conversion-log columns and the click-log column whose rule each borrows.
_CONVERSION_RULE_OF = {columns.CONVERSION_ID: columns.CLICK_ID,
                       columns.CLICK_ID: columns.CLICK_ID,
                       columns.CONVERSION_TS: columns.CLICK_TS}


def _rule(name: str, feature) -> Rule:
  lo = hi = None
  finite = False
  if feature.HasField('int_domain'):
    d = feature.int_domain
    lo = d.min if d.HasField('min') else None
    hi = d.max if d.HasField('max') else None
  elif feature.HasField('float_domain'):
    d = feature.float_domain
    lo = d.min if d.HasField('min') else None
    hi = d.max if d.HasField('max') else None
    finite = d.disallow_nan or d.disallow_inf
  values = (tuple(feature.string_domain.value)
            if feature.HasField('string_domain') else None)
  return Rule(name, _SCHEMA_TYPES[feature.type],
              feature.presence.min_fraction >= 1.0, lo, hi, finite, values)


@functools.lru_cache(maxsize=None)
def log_rules(log: str) -> Tuple[Rule, ...]:
  """The rules of every column of `log` (layout.CLICKS or layout.CONVERSIONS)."""
  features = {f.name: f for f in schemas.load_schema().feature}
  if log == layout.CLICKS:
    return tuple(_rule(n, features[n]) for n in columns.CLICK_LOG_COLUMNS)
  return tuple(dataclasses.replace(_rule(n, features[_CONVERSION_RULE_OF[n]]),
                                   column=n, required=True)
               for n in columns.CONVERSION_LOG_COLUMNS)


# --- Files ---------------------------------------------------------------------

def read_error(path: str, error: Exception) -> InputError:
  """A TensorFlow read failure of `path` as an InputError saying what is wrong."""
  text = getattr(error, 'message', None) or str(error)
  # Drop TensorFlow's op wrapper: '{{function_node ...}} <what> [Op:...] name: '.
  text = re.sub(r'^\{\{[^}]*\}\}\s*', '', text)
  text = re.sub(r'\s*\[Op:.*$', '', text, flags=re.S).strip()
  corrupt = re.search(r'corrupted record at (\d+)', text)
  if 'incorrect header check' in text:
    why = 'not a gzip file (the logs are gzip TFRecords)'
  elif 'inflate()' in text:
    why = 'corrupt gzip data (truncated or damaged)'
  elif 'truncated record' in text:
    why = 'truncated gzip TFRecord file (it ends inside a record)'
  elif corrupt and corrupt.group(1) == '0':
    why = 'not a TFRecord file (gzip, but no record at its start)'
  elif corrupt:
    why = f'corrupt TFRecord file (bad record at byte {corrupt.group(1)})'
  else:
    why = f'unreadable ({text.splitlines()[0] if text else type(error).__name__})'
  return InputError(f'{path}: {why}')


# --- Rows ----------------------------------------------------------------------

def _arrow_kind(column_type) -> str:
  value = column_type.value_type
  if pa.types.is_integer(value):
    return 'int'
  if pa.types.is_floating(value):
    return 'float'
  return 'bytes'


def _locate_decode_error(path: str, log: str, records: Sequence[bytes],
                         first_row: int, error: Exception) -> InputError:
  """Which record or column made the batch decoder fail."""
  kinds: Dict[str, Tuple[str, int]] = {}
  for i, record in enumerate(records):
    try:
      example = tf.train.Example.FromString(record)
    except Exception:  # pylint: disable=broad-except
      return InputError(f'{path}: record {first_row + i} is not a tf.Example '
                        f'(the {log} log holds serialized tf.Examples)')
    for name, feature in example.features.feature.items():
      kind = {'int64_list': 'int', 'float_list': 'float',
              'bytes_list': 'bytes'}.get(feature.WhichOneof('kind'))
      if kind is None:
        continue
      seen = kinds.setdefault(name, (kind, first_row + i))
      if seen[0] != kind:
        return InputError(
            f'{path}: column {name} is {seen[0]} in record {seen[1]} but {kind} in '
            f'record {first_row + i}; one type per column')
  return InputError(f'{path}: records cannot be decoded ({error})')


def _first(mask: np.ndarray, first_row: int) -> int:
  return first_row + int(np.flatnonzero(mask)[0])


def check_rows(path: str, log: str, records: Sequence[bytes],
               first_row: int = 0) -> Dict[str, np.ndarray]:
  """Checks serialized rows of `log` from file `path` against its rules.

  Args:
    path: the file (named in errors).
    log: layout.CLICKS or layout.CONVERSIONS.
    records: serialized tf.Examples (a batch of the file).
    first_row: index of records[0] in the file (errors name rows by it).

  Returns:
    The checked columns present, as numpy arrays (one value per row).

  Raises:
    InputError: naming the file, the column and the rule broken.
  """
  records = list(records)
  if not records:
    return {}
  try:
    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(records)
  except Exception as e:  # pylint: disable=broad-except
    raise _locate_decode_error(path, log, records, first_row, e) from None
  n = batch.num_rows
  out = {}
  for rule in log_rules(log):
    c = rule.column
    if c not in batch.schema.names:
      if rule.required:
        raise InputError(f'{path}: column {c} is missing (the {log} log requires '
                         'it: schemas/columns.py)')
      continue
    column = batch.column(batch.schema.get_field_index(c))
    kind = _arrow_kind(column.type)
    if kind != rule.dtype:
      raise InputError(f'{path}: column {c} holds {kind} values; the schema says '
                       f'{rule.dtype}')
    lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0))
    if (lengths != 1).any():
      bad = lengths != 1
      row = _first(bad, first_row)
      if (lengths == 0).any():
        row = _first(lengths == 0, first_row)
        raise InputError(f'{path}: column {c} is missing from {int((lengths == 0).sum())}'
                         f' of {n} rows (first: record {row}); every row needs one '
                         'value')
      raise InputError(f'{path}: column {c} has {int(lengths[row - first_row])} values'
                       f' in record {row}; every row needs exactly one')
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False))
    if kind == 'bytes':
      values = np.array([v.decode('utf-8', 'replace') for v in values], dtype=object)
      if rule.values is not None:
        bad = ~np.isin(values, rule.values)
        if bad.any():
          row = _first(bad, first_row)
          raise InputError(
              f'{path}: column {c} is outside its domain {list(rule.values)} in '
              f'{int(bad.sum())} rows (first: record {row}, {values[row - first_row]!r})')
    else:
      if rule.finite and kind == 'float':
        bad = ~np.isfinite(values)
        if bad.any():
          row = _first(bad, first_row)
          raise InputError(f'{path}: column {c} is not finite in {int(bad.sum())} '
                           f'rows (first: record {row}, {values[row - first_row]})')
      bad = np.zeros(n, bool)
      if rule.min is not None:
        bad |= values < rule.min
      if rule.max is not None:
        bad |= values > rule.max
      if bad.any():
        row = _first(bad, first_row)
        lo = '-inf' if rule.min is None else f'{rule.min:g}'
        hi = 'inf' if rule.max is None else f'{rule.max:g}'
        raise InputError(f'{path}: column {c} is outside its domain [{lo}, {hi}] in '
                         f'{int(bad.sum())} rows (first: record {row}, '
                         f'{values[row - first_row]})')
    out[c] = values
  return out


# --- Conversions -------------------------------------------------------------

def _when(ts: int) -> str:
  return datetime.datetime.fromtimestamp(int(ts), datetime.timezone.utc).strftime(
      '%Y-%m-%dT%H:%M:%SZ')


def dedup_conversion(conversion_id: int,
                     copies: Sequence[Tuple[int, int, str]]) -> Tuple[int, int, str]:
  """The one conversion behind rows sharing `conversion_id`.

  Args:
    conversion_id: the id.
    copies: (click_id, conversion_ts, file) of every row with it.

  Returns:
    (click_id, conversion_ts, file) of the first copy: exact copies are one
    conversion delivered more than once.

  Raises:
    InputError: copies that disagree on the click or the time.
  """
  first = copies[0]
  for other in copies[1:]:
    if other[:2] != first[:2]:
      where = first[2] if first[2] == other[2] else f'{first[2]} and {other[2]}'
      raise InputError(
          f'{where}: column {columns.CONVERSION_ID} '
          f'{conversion_id} is duplicated with conflicting values ({columns.CLICK_ID} '
          f'{first[0]} at {_when(first[1])} vs {columns.CLICK_ID} {other[0]} at '
          f'{_when(other[1])}); exact copies are dropped, conflicting ones are an '
          'error')
  return first


def check_after_click(click_id: int, click_ts: int, click_file: str,
                      conversions: Sequence[Tuple[int, int, str]]) -> None:
  """Raises InputError if a conversion of the click is earlier than the click.

  Args:
    click_id, click_ts, click_file: the click.
    conversions: (conversion_ts, conversion_id, file) of its conversions.
  """
  for ts, conversion_id, path in conversions:
    if ts < click_ts:
      raise InputError(
          f'{path}: column {columns.CONVERSION_TS} of {columns.CONVERSION_ID} '
          f'{conversion_id} ({_when(ts)}) is before its click ({columns.CLICK_ID} '
          f'{click_id} at {_when(click_ts)} in {click_file}); a conversion follows '
          'its click')


def cap_conversions(conversions: List[Tuple[int, int, str]],
                    cap: int) -> List[Tuple[int, int, str]]:
  """The earliest `cap` of a click's (conversion_ts, conversion_id, file)."""
  if len(conversions) <= cap:
    return conversions
  return sorted(conversions)[:cap]


def check_capped_fraction(capped: int, clicks: int, cap: int, max_fraction: float,
                          where: str) -> None:
  """Raises InputError if more than `max_fraction` of the clicks were capped."""
  if clicks and capped / clicks > max_fraction:
    raise InputError(
        f'{where}: column {columns.CLICK_ID}: {capped} of {clicks} clicks '
        f'({capped / clicks:.3%}) have more than {cap} conversions, above '
        f'example_gen.max_capped_fraction ({max_fraction:.3%}); one bulk purchase '
        'is capped, this many means a broken conversion log')
