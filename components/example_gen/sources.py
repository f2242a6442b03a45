"""Where the logs are and how a file becomes rows: TFRecord, Parquet, CSV, BigQuery.

The dataset spec's `source` (config/dataset.py) names the format and, per log, a
day-partition pattern (files) or a table or query (BigQuery). Files are read one
at a time through tf.io.gfile (local, gs://, any TensorFlow file system) by the
ExampleGen's DoFn, so every failure names its file; the parsing is pyarrow's
(Parquet and CSV, the library Beam's own parquetio uses) or tfx_bsl's tf.Example
decoder (TFRecord). Every reader yields pyarrow tables of the log's own columns,
one nullable scalar per row; `inputs.normalize` turns them into example columns.
BigQuery is read by Beam's ReadFromBigQuery with the as-of-T window in the SQL,
behind one seam (`read_bigquery`) that tests patch, as TFX's own BigQueryExampleGen
tests do.
"""

import datetime
import os
import re
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
from pyarrow import parquet as pq
import tensorflow as tf
from tfx_bsl.coders import example_coder

from config.dataset import DatasetSpec
from config.dataset import LogSourceSpec

CLICKS = 'clicks'
CONVERSIONS = 'conversions'
LOGS = (CLICKS, CONVERSIONS)
# Rows per table a file reader yields.
BATCH_ROWS = 8192
_PLACEHOLDER = re.compile(r'\{date(?::([^}]*))?\}')


class WindowError(ValueError):
  """The logs cannot make the requested window (names dates and paths)."""


# --- Day partitions (files) ----------------------------------------------------

def _is_uri(path: str) -> bool:
  return '://' in path


def log_pattern(data_root: str, source: LogSourceSpec) -> str:
  """The log's partition pattern as a path (relative ones under data_root)."""
  if os.path.isabs(source.path) or _is_uri(source.path):
    return source.path
  return os.path.join(data_root, source.path)


def _date_format(pattern: str) -> str:
  m = _PLACEHOLDER.search(pattern)
  return (m.group(1) or '%Y-%m-%d') if m else '%Y-%m-%d'


def partition_path(pattern: str, day: datetime.date) -> str:
  """The directory of one day partition."""
  return _PLACEHOLDER.sub(lambda m: day.strftime(m.group(1) or '%Y-%m-%d'), pattern)


def _split(pattern: str) -> Tuple[str, str, str]:
  """(parent directory, the partition component with its placeholder, the rest)
  of a pattern; the placeholder must lie inside one path component."""
  parts = pattern.split('/')
  for i, part in enumerate(parts):
    if _PLACEHOLDER.search(part):
      if '/' in _date_format(part):
        break
      return '/'.join(parts[:i]), part, '/'.join(parts[i + 1:])
  raise WindowError(f'{pattern}: the {{date}} placeholder must lie inside one path '
                    'component to list the partitions')


def partition_days(pattern: str) -> List[datetime.date]:
  """The day partitions present for a pattern (listing its parent directory)."""
  parent, part, _ = _split(pattern)
  if not tf.io.gfile.isdir(parent):
    raise WindowError(f'no log at {parent}')
  m = _PLACEHOLDER.search(part)
  prefix, suffix = part[:m.start()], part[m.end():]
  fmt = m.group(1) or '%Y-%m-%d'
  days = []
  for name in tf.io.gfile.listdir(parent):
    name = name.rstrip('/')
    if not (name.startswith(prefix) and name.endswith(suffix)):
      continue
    text = name[len(prefix):len(name) - len(suffix) if suffix else None]
    try:
      days.append(datetime.datetime.strptime(text, fmt).date())
    except ValueError:
      continue
  return sorted(days)


def latest_day(pattern: str) -> datetime.date:
  days = partition_days(pattern)
  if not days:
    raise WindowError(f'no day partitions match {pattern}')
  return days[-1]


def is_data_file(name: str, marker: str) -> bool:
  """Whether a file in a partition holds records: anything but the marker and
  hidden (`.` or `_`-prefixed) files, which uploaders and Spark use for their
  temporaries and markers."""
  return name != marker and not name.startswith('.') and not name.startswith('_')


def required_partitions(pattern: str, marker: str, days: Sequence[datetime.date],
                        log: str, describe: str) -> List[str]:
  """Partition directories of `days`; all must exist and carry the marker.

  Raises:
    WindowError: naming the missing days (a hole in the logs is an upstream
      failure, not an empty day: writers write empty partitions too), or the
      first partition without its completeness marker (a half-written day
      would silently lower the labels).
  """
  parent = _split(pattern)[0]
  if not tf.io.gfile.isdir(parent):
    raise WindowError(f'no {log} log at {parent}')
  paths = [partition_path(pattern, d) for d in days]
  missing = [d.isoformat() for d, p in zip(days, paths) if not tf.io.gfile.isdir(p)]
  if missing:
    shown = ', '.join(missing[:5]) + (' ...' if len(missing) > 5 else '')
    raise WindowError(f'{len(missing)} {log} partitions of {describe} are missing '
                      f'under {parent}: {shown}')
  if marker:
    for path in paths:
      if not tf.io.gfile.exists(os.path.join(path, marker)):
        raise WindowError(
            f'{path}: partition without its {marker} marker (its writer adds it '
            'after the last file); it may be half-written, so it is not read')
  return paths


def partition_files(partition: str, marker: str) -> List[str]:
  """The data files of a partition directory, sorted (local or gs://).

  Every file but the marker and hidden files is a data file: a stray file is
  read, and fails as not of the log's format, rather than being skipped unseen.
  """
  out = []
  for name in tf.io.gfile.listdir(partition):
    if name.endswith('/'):  # a directory on GCS
      raise WindowError(f'{os.path.join(partition, name)}: a directory inside a '
                        'partition; partitions hold data files only')
    if is_data_file(name, marker):
      out.append(os.path.join(partition, name))
  return sorted(out)


# --- Files -> tables ---------------------------------------------------------

def _scalar_column(name: str, column) -> pa.Array:
  """A tf.Example list column as nullable scalars (an empty list is null; more
  than one value is kept as a list for the rules to reject)."""
  lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0))
  if (lengths > 1).any():
    return column
  del name
  values = column.flatten()
  if (lengths == 1).all():
    return values
  out = np.full(len(lengths), None, dtype=object)
  out[lengths == 1] = values.to_numpy(zero_copy_only=False)
  return pa.array(out.tolist(), type=values.type)


def read_tfrecord(path: str) -> Iterator[Tuple[int, pa.Table, List[bytes]]]:
  """(first row, table, serialized records) per batch of a gzip TFRecord file."""
  dataset = tf.data.TFRecordDataset([path], compression_type='GZIP')
  row = 0
  for batch in dataset.batch(BATCH_ROWS).as_numpy_iterator():
    records = list(batch)
    yield row, records, records
    row += len(records)


def decode_examples(records: Sequence[bytes]) -> pa.Table:
  """Serialized tf.Examples -> a table of nullable scalar columns (raises on
  records that are not tf.Examples or mix types within a column)."""
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(list(records))
  return pa.table({n: _scalar_column(n, batch.column(i))
                   for i, n in enumerate(batch.schema.names)})


class _GFile(tf.io.gfile.GFile):
  """tf.io.gfile.GFile with the `closed` attribute pyarrow's readers check (they
  take any file object; gs:// needs TensorFlow's file system)."""
  closed = False

  def close(self):
    super().close()
    self.closed = True


def read_parquet(path: str, columns: Sequence[str]
                 ) -> Iterator[Tuple[int, pa.Table, None]]:
  """(first row, table) per batch of a Parquet file (the spec's columns that the
  file has; the rules name any missing one)."""
  with _GFile(path, 'rb') as f:
    parquet = pq.ParquetFile(f)
    present = [c for c in columns if c in parquet.schema_arrow.names]
    row = 0
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=present):
      yield row, pa.Table.from_batches([batch]), None
      row += batch.num_rows


def read_csv(path: str, columns: Sequence[str], delimiter: str
             ) -> Iterator[Tuple[int, pa.Table, None]]:
  """(first row, table) per block of a CSV file with a header row. Every column
  is read as text, so the rules (not the CSV parser) say which value of which row
  breaks its declared type; an empty field is null."""
  with _GFile(path, 'rb') as f:
    header = f.readline().decode('utf-8-sig').rstrip('\r\n').split(delimiter)
    f.seek(0)
    present = [c for c in columns if c in header]
    reader = pa_csv.open_csv(
        f, read_options=pa_csv.ReadOptions(block_size=1 << 22),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter),
        convert_options=pa_csv.ConvertOptions(
            include_columns=present, column_types={c: pa.string() for c in present},
            strings_can_be_null=True, quoted_strings_can_be_null=False))
    row = 0
    for batch in reader:
      yield row, pa.Table.from_batches([batch]), None
      row += batch.num_rows


def read_file(fmt: str, path: str, columns: Sequence[str], delimiter: str = ','
              ) -> Iterator[Tuple[int, object, Optional[List[bytes]]]]:
  """Batches of one log file: (first row, rows, serialized records or None).

  Rows are a pyarrow table, or for TFRecord the serialized records (decoded by
  the caller, which names the file when they are not tf.Examples).
  """
  if fmt == 'tfrecord':
    return read_tfrecord(path)
  if fmt == 'parquet':
    return read_parquet(path, columns)
  if fmt == 'csv':
    return read_csv(path, columns, delimiter)
  raise ValueError(f'{path}: no file reader for format {fmt!r}')


# --- BigQuery ------------------------------------------------------------------

def _utc(t: datetime.datetime) -> str:
  return t.astimezone(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S')


def _time_bound(column: str, unit: str, t: datetime.datetime) -> str:
  """A SQL expression of instant `t` comparable with timestamp column `column`."""
  ts = f"TIMESTAMP('{_utc(t)}+00')"
  if unit == 'timestamp':
    return ts
  if unit in ('s', 'ms', 'us'):
    fn = {'s': 'UNIX_SECONDS', 'ms': 'UNIX_MILLIS', 'us': 'UNIX_MICROS'}[unit]
    return f'{fn}({ts})'
  if unit == 'ns':
    return f'UNIX_MICROS({ts}) * 1000'
  raise ValueError(f'{column}: a BigQuery timestamp column holds numbers or a '
                   f'TIMESTAMP, not unit {unit!r}')


def bigquery_sql(spec: DatasetSpec, log: str, columns: Sequence[str],
                 start: datetime.datetime, end: datetime.datetime) -> str:
  """The query of one log's rows in the as-of-T window: clicks in [start, end)
  (T - W, T), conversions in [start, end] (reported by T, not before the
  window's first click)."""
  source = getattr(spec.source, log)
  ts = (spec.clicks.timestamp if log == CLICKS else spec.conversions.timestamp)
  column = f'`{ts.column}`'
  if ts.unit in ('iso8601', 'format'):
    # Text: compared as the instant it names (BigQuery parses ISO 8601; a
    # strptime format becomes its PARSE_TIMESTAMP).
    column = (f'TIMESTAMP({column})' if ts.unit == 'iso8601' else
              f"PARSE_TIMESTAMP('{ts.format}', {column})")
    lo, hi = (f"TIMESTAMP('{_utc(t)}+00')" for t in (start, end))
  else:
    lo, hi = (_time_bound(ts.column, ts.unit, t) for t in (start, end))
  upper = '<' if log == CLICKS else '<='
  table = f'`{source.table}`' if source.table else f'({source.query.strip()})'
  selected = ', '.join(f'`{c}`' for c in columns)
  return (f'SELECT {selected} FROM {table} AS log WHERE {column} >= {lo} '
          f'AND {column} {upper} {hi}')


def read_bigquery(pipeline: beam.Pipeline, label: str, query: str, project: str):
  """The rows of `query` as dicts (Beam's ReadFromBigQuery, standard SQL). The
  seam tests patch (no emulator stands in for BigQuery's export)."""
  return pipeline | label >> beam.io.ReadFromBigQuery(
      query=query, use_standard_sql=True, project=project or None)


def rows_to_table(rows: Sequence[Dict], columns: Sequence[str]) -> pa.Table:
  """BigQuery rows (dicts) as a table of the given columns (a missing key is
  null)."""
  return pa.table({c: pa.array([r.get(c) for r in rows]) for c in columns})
