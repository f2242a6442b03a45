"""The logs' input rules: what a file and its rows must be, how a row becomes an
example's columns, and what the join does with copies, early and excessive
conversions (docs/architecture.md §3).

Pure logic over paths, tables and numpy columns; the executor moves the rows.
Every failure is an `InputError` whose message is one line naming the file (or
partition), the column and the rule broken, with the dataset spec's key that
declares it, so a night stops before anything is trained and its log says where
to look.

Rules per log column come from the dataset spec (config/dataset.py): the id and
timestamp columns, every feature (dtype, domain, missing values, vocabulary or
hashing), the meaning columns the pipeline reads (segment, first-party flag,
tCPA, panel) and, for synthetic data, the optional truth columns. `normalize`
turns a table of the log's own columns into the example's: renamed, string ids
hashed (or mapped by a vocabulary), timestamps in epoch seconds, missing values
filled where the spec allows it, ints as int64 and numbers as float32.
"""

import dataclasses
import datetime
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf

from config.dataset import DatasetSpec
from schemas import codec
from schemas import columns

CLICKS = 'clicks'
CONVERSIONS = 'conversions'


_ISO8601 = (r'\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?'
            r'(Z|[+-]\d{2}(:?\d{2})?)?')


class InputError(ValueError):
  """A log file or row breaks the data contract (one line: file, column, rule)."""


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one log column must hold in every row, and what it becomes."""
  column: str  # the log's column
  name: str  # the example column it becomes
  key: str  # the spec key that declares it
  dtype: str  # 'int', 'float' or 'string' (before normalisation)
  required: bool = True
  min: Optional[float] = None
  max: Optional[float] = None
  missing: str = 'error'  # or 'fill'
  fill: float = 0.0
  vocabulary: Optional[Tuple[str, ...]] = None
  hashed: bool = False  # a string hashed to an int64 id
  unit: str = ''  # a timestamp's unit (config.dataset.TIME_UNITS)
  format: str = ''

  def passes_through(self) -> bool:
    """A TFRecord value needs no change (same name, no mapping)."""
    return (self.column == self.name and not self.hashed and not self.vocabulary
            and self.missing == 'error' and self.unit in ('', 's'))


def _id_rule(spec_id, name: str, key: str) -> Rule:
  hashed = spec_id.dtype == 'string'
  return Rule(spec_id.column, name, key, spec_id.dtype, min=None if hashed else 0,
              hashed=hashed)


def _ts_rule(ts, name: str, key: str) -> Rule:
  dtype = {'iso8601': 'string', 'format': 'string', 'timestamp': 'timestamp'}.get(
      ts.unit, 'int')
  return Rule(ts.column, name, key, dtype, min=0, unit=ts.unit, format=ts.format)


def log_rules(spec: DatasetSpec, log: str) -> Tuple[Rule, ...]:
  """The rules of every column the ExampleGen reads from `log`."""
  if log == CONVERSIONS:
    c = spec.conversions
    out = [_id_rule(c.id, columns.CONVERSION_ID, 'conversions.id'),
           _id_rule(dataclasses.replace(spec.clicks.id, column=c.click_id),
                    columns.CLICK_ID, 'conversions.click_id'),
           _ts_rule(c.timestamp, columns.CONVERSION_TS, 'conversions.timestamp')]
    if c.count:
      out.append(Rule(c.count, columns.CONVERSION_COUNT, 'conversions.count', 'int',
                      min=0))
    return tuple(out)
  out = [_id_rule(spec.clicks.id, columns.CLICK_ID, 'clicks.id'),
         _ts_rule(spec.clicks.timestamp, columns.CLICK_TS, 'clicks.timestamp')]
  for i, f in enumerate(spec.clicks.features):
    col = f.to_column()
    hashed = f.dtype == 'string' and not f.vocabulary
    out.append(Rule(
        f.log_column(), f.name, f'clicks.features[{i}]', f.dtype,
        min=None if f.dtype == 'string' else col.min,
        max=None if f.dtype == 'string' else col.max, missing=f.missing,
        fill=f.fill, vocabulary=tuple(f.vocabulary) or None, hashed=hashed))
  meanings = {v: k for k, v in dataclasses.asdict(spec.meanings).items()
              if isinstance(v, str) and v}
  for name, col in spec.passthrough().items():
    out.append(Rule(name, name, f'meanings.{meanings[name]}', col.dtype,
                    min=col.min, max=col.max))
  if spec.truth:
    for col in spec.pipeline_columns():
      if col.role == columns.Role.TRUTH:
        out.append(Rule(col.name, col.name, 'truth', col.dtype, required=False,
                        min=col.min, max=col.max))
  return tuple(out)


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

def _arrow_kind(arrow_type) -> str:
  if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
    return 'list'
  if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
    return 'int'
  if pa.types.is_floating(arrow_type):
    return 'float'
  if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
    return 'timestamp'
  if pa.types.is_null(arrow_type):
    return 'null'
  return 'string'


def locate_decode_error(path: str, log: str, records: Sequence[bytes],
                        first_row: int, error: Exception) -> InputError:
  """Which record or column made the tf.Example batch decoder fail."""
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


def _parse_text(path: str, rule: Rule, text: np.ndarray, first_row: int,
                dtype) -> np.ndarray:
  """Numbers from a text column (CSV); names the first value that is not one."""
  values = pd.to_numeric(pd.Series(text), errors='coerce').to_numpy(np.float64)
  bad = np.isnan(values) & ~pd.isna(text)
  bad &= ~np.isin(np.char.lower(text.astype(str)), ('nan', '-nan'))
  if dtype == np.int64:
    bad |= np.isfinite(values) & (values != np.floor(values))
  if bad.any():
    row = _first(bad, first_row)
    raise InputError(f'{path}: column {rule.column} holds {text[row - first_row]!r} '
                     f'in record {row}; the spec declares {rule.dtype} '
                     f'({rule.key}.dtype)')
  return values


def _decoded(values) -> np.ndarray:
  """Text values as str (a tf.Example's bytes decoded as UTF-8); None stays."""
  return np.array([v.decode('utf-8', 'replace') if isinstance(v, bytes) else v
                   for v in values], dtype=object)


def _epoch_seconds(path: str, rule: Rule, column: pa.Array, kind: str,
                   first_row: int) -> np.ndarray:
  """A timestamp column in epoch seconds (float64, NaN where missing)."""
  if kind == 'timestamp':
    us = pc.cast(pc.cast(column, pa.timestamp('us', 'UTC')), pa.int64())
    return np.asarray(us.to_numpy(zero_copy_only=False), np.float64) / 1e6
  if rule.unit in ('iso8601', 'format'):
    if kind != 'string':
      raise InputError(f'{path}: column {rule.column} holds {kind} values; the spec '
                       f'declares {rule.unit} text ({rule.key}.unit)')
    text = pd.Series(_decoded(column.to_numpy(zero_copy_only=False)))
    if rule.unit == 'iso8601':
      # pandas 1.5 has no strict ISO format: parse, and reject what is not ISO.
      parsed = pd.to_datetime(text, utc=True, errors='coerce')
      iso = text.str.fullmatch(_ISO8601).fillna(False).to_numpy(bool)
      parsed[~iso] = pd.NaT
    else:
      parsed = pd.to_datetime(text, utc=True, errors='coerce', format=rule.format)
    bad = parsed.isna().to_numpy() & text.notna().to_numpy()
    if bad.any():
      row = _first(bad, first_row)
      raise InputError(f'{path}: column {rule.column} holds {text[row - first_row]!r} '
                       f'in record {row}, not a {rule.unit} time '
                       f'({rule.key}.{"format" if rule.format else "unit"})')
    out = parsed.to_numpy(dtype='datetime64[us]').astype(np.int64) / 1e6
    out[parsed.isna().to_numpy()] = np.nan
    return out
  if kind == 'timestamp':
    raise InputError(f'{path}: column {rule.column} holds timestamps; the spec '
                     f'declares unit {rule.unit} ({rule.key}.unit)')
  if kind == 'string':
    values = _parse_text(path, rule, column.to_numpy(zero_copy_only=False),
                         first_row, np.float64)
  elif kind in ('int', 'float', 'null'):
    values = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False),
                        np.float64)
  else:
    raise InputError(f'{path}: column {rule.column} holds {kind} values; the spec '
                     f'declares a timestamp in {rule.unit} ({rule.key}.unit)')
  scale = {'s': 1.0, 'ms': 1e3, 'us': 1e6, 'ns': 1e9}[rule.unit or 's']
  return np.floor(values / scale) if scale != 1.0 else values


def _values(path: str, rule: Rule, column: pa.Array, first_row: int, n: int
            ) -> np.ndarray:
  """A scalar column's values as float64 / object (strings), missing as NaN / None,
  after the type check against the rule."""
  kind = _arrow_kind(column.type)
  if kind == 'list':
    lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0))
    row = _first(lengths > 1, first_row)
    raise InputError(f'{path}: column {rule.column} has {int(lengths[row - first_row])}'
                     f' values in record {row}; every row needs exactly one')
  if rule.unit:
    return _epoch_seconds(path, rule, column, kind, first_row)
  text = kind == 'string' and rule.dtype != 'string'
  if kind == 'null':
    return np.full(n, np.nan) if rule.dtype != 'string' else np.full(n, None, object)
  if rule.dtype == 'string':
    if kind != 'string':
      raise InputError(f'{path}: column {rule.column} holds {kind} values; the spec '
                       f'declares string ({rule.key}.dtype)')
    return _decoded(column.to_numpy(zero_copy_only=False))
  if text and not pa.types.is_string(column.type) and not pa.types.is_large_string(
      column.type):
    # Bytes of a tf.Example: strings where the spec declares numbers.
    raise InputError(f'{path}: column {rule.column} holds string values; the spec '
                     f'declares {rule.dtype} ({rule.key}.dtype)')
  if text:
    return _parse_text(path, rule, column.to_numpy(zero_copy_only=False), first_row,
                       np.int64 if rule.dtype == 'int' else np.float64)
  if rule.dtype == 'int' and kind == 'float':
    raise InputError(f'{path}: column {rule.column} holds float values; the spec '
                     f'declares int ({rule.key}.dtype)')
  if kind not in ('int', 'float'):
    raise InputError(f'{path}: column {rule.column} holds {kind} values; the spec '
                     f'declares {rule.dtype} ({rule.key}.dtype)')
  if rule.dtype == 'int' and column.null_count == 0:
    # Exact int64 (ids beyond 2^53 would not survive a float64).
    return np.asarray(column.to_numpy(zero_copy_only=False), np.int64)
  return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False),
                    np.float64)


def _missing(values: np.ndarray) -> np.ndarray:
  """Missing values: None (strings), NaN (numbers; ints without a null are exact)."""
  if values.dtype == object:
    return np.array([v is None for v in values], bool)
  if values.dtype.kind == 'f':
    return np.isnan(values)
  return np.zeros(len(values), bool)


def normalize(path: str, log: str, table: pa.Table, rules: Sequence[Rule],
              first_row: int = 0) -> Dict[str, np.ndarray]:
  """Checks a batch of a log's rows against its rules and returns the example's
  columns (int64 ids and ints, float32 numbers).

  Args:
    path: the file (named in errors).
    log: CLICKS or CONVERSIONS.
    table: the rows, one nullable scalar per column (sources.py).
    rules: `log_rules(spec, log)`.
    first_row: index of the table's first row in the file (errors name rows).

  Raises:
    InputError: naming the file, the column, the rule broken and its spec key.
  """
  n = table.num_rows
  out: Dict[str, np.ndarray] = {}
  if n == 0:
    return out
  for rule in rules:
    c = rule.column
    if c not in table.column_names:
      if rule.required:
        raise InputError(f'{path}: column {c} is missing (the {log} log declares it:'
                         f' {rule.key})')
      continue
    column = table.column(c).combine_chunks()
    values = _values(path, rule, column, first_row, n)
    absent = _missing(values)
    if rule.dtype == 'float' and rule.missing == 'error':
      # A NaN that is a value (not a null) is reported as not finite below.
      absent &= np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)
    if absent.any():
      if rule.missing != 'fill':
        row = _first(absent, first_row)
        raise InputError(f'{path}: column {c} is missing from {int(absent.sum())} of '
                         f'{n} rows (first: record {row}); every row needs one value '
                         f'({rule.key}.missing: error)')
      values = values.copy()
      values[absent] = '' if values.dtype == object else rule.fill
    if rule.dtype == 'string' and not rule.unit:
      out[rule.name] = _string_ids(values, rule)
      continue
    if rule.dtype == 'float' and not rule.unit:
      bad = ~np.isfinite(values)
      if bad.any():
        row = _first(bad, first_row)
        raise InputError(f'{path}: column {c} is not finite in {int(bad.sum())} rows '
                         f'(first: record {row}, {values[row - first_row]}) '
                         f'({rule.key})')
    bad = np.zeros(n, bool)
    if rule.min is not None:
      bad |= values < rule.min
    if rule.max is not None:
      bad |= values > rule.max
    if bad.any():
      row = _first(bad, first_row)
      lo = '-inf' if rule.min is None else f'{rule.min:g}'
      hi = 'inf' if rule.max is None else f'{rule.max:g}'
      shown = values[row - first_row]
      shown = int(shown) if rule.dtype == 'int' or rule.unit else shown
      raise InputError(f'{path}: column {c} is outside its domain [{lo}, {hi}] in '
                       f'{int(bad.sum())} rows (first: record {row}, {shown}) '
                       f'({rule.key})')
    if rule.unit or rule.dtype == 'int':
      out[rule.name] = np.asarray(values, np.int64)
    else:
      out[rule.name] = np.asarray(values, np.float32)
  return out


def _string_ids(values: np.ndarray, rule: Rule) -> np.ndarray:
  """int64 ids of strings: the vocabulary's index (unknown: its length), or the
  documented hash (config/dataset.py)."""
  text = np.asarray([str(v) for v in values], dtype=object)
  if rule.vocabulary:
    index = {v: i for i, v in enumerate(rule.vocabulary)}
    unknown = len(rule.vocabulary)
    return np.array([index.get(v, unknown) for v in text], np.int64)
  return codec.hash_strings(text)


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
