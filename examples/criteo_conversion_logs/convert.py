"""Criteo Conversion Logs -> the day-partitioned CSV logs of its dataset spec.

The public Criteo conversion logs (Chapelle, "Modeling delayed feedback in
display advertising", KDD 2014) are one tab-separated file, `data.txt`, without
a header: the click time, the conversion time (empty when the click never
converted), 8 integer features and 9 hashed categorical features, any of them
possibly empty. Times are seconds from the start of the 60-day collection.

This command streams that file (plain or gzip; never read whole) and writes the
two logs `examples/criteo_conversion_logs/dataset.yaml` declares:

  DIR/clicks/date=YYYY-MM-DD/part-00000.csv       click_id, click_ts, int1..int8,
                                                  cat1..cat9 (by click day, UTC)
  DIR/conversions/date=YYYY-MM-DD/part-00000.csv  conversion_id, click_id,
                                                  conversion_ts (by conversion day)
  DIR/<log>/date=YYYY-MM-DD/_SUCCESS              after the partition's file

click_id is the line number in data.txt (1-based), so an error downstream
points back at the line; a click converts at most once in this data, so a
conversion's id is its click's. Times become epoch seconds: --start-date's UTC
midnight plus the file's seconds. Feature fields are copied as text, empty
staying empty: the ExampleGen applies the spec's rules (missing values, types),
naming the file and the column when a value breaks them.

Every day from the first click day to the last click day has a click partition,
and to the later of the last click or conversion day a conversion partition
(header only when empty): the ExampleGen treats a missing day as a failed upload.
The click log ends with the last click day, not the last conversion day: the
`data_end` policy puts T at the midnight after the newest click partition, and
empty click days after the data would leave the eval split empty.

Usage:
  python -m examples.criteo_conversion_logs.convert --input data.txt[.gz] \
      --out data/criteo [--start-date 2026-01-01] [--force]
"""

import argparse
import csv
import datetime
import gzip
import io
import os
import shutil
import sys
import time
from typing import Dict, Iterable, Optional, TextIO, Tuple

CLICKS = 'clicks'
CONVERSIONS = 'conversions'
MARKER = '_SUCCESS'
PART = 'part-00000.csv'
N_INT = 8
N_CAT = 9
N_FIELDS = 2 + N_INT + N_CAT
INT_COLUMNS = tuple(f'int{i}' for i in range(1, N_INT + 1))
CAT_COLUMNS = tuple(f'cat{i}' for i in range(1, N_CAT + 1))
HEADERS = {
    CLICKS: ('click_id', 'click_ts') + INT_COLUMNS + CAT_COLUMNS,
    CONVERSIONS: ('conversion_id', 'click_id', 'conversion_ts'),
}
DAY_SECONDS = 86400
DEFAULT_OUT = 'data/criteo'  # paths.data_root of the example's config.yaml
DEFAULT_START = '2026-01-01'


class ConvertError(ValueError):
  """The input is not in the Criteo conversion logs format (names the line)."""


def open_input(path: str) -> TextIO:
  """The input as text lines, gunzipped if it is gzip (by its magic bytes, so a
  renamed file still reads).

  Args:
    path: data.txt or data.txt.gz.

  Returns:
    A text stream of the file's lines.
  """
  with open(path, 'rb') as f:
    gzipped = f.read(2) == b'\x1f\x8b'
  raw = gzip.open(path, 'rb') if gzipped else open(path, 'rb')
  # 1 MB buffer: the file is read once, front to back.
  return io.TextIOWrapper(io.BufferedReader(raw, 1 << 20), encoding='utf-8')


def _seconds(text: str, what: str, line: int) -> int:
  try:
    return int(text)
  except ValueError:
    raise ConvertError(f'line {line}: the {what} {text!r} is not whole seconds'
                       ) from None


def parse_line(text: str, line: int) -> Tuple[int, Optional[int], list]:
  """One line of data.txt.

  Args:
    text: the line, without its newline.
    line: its 1-based number (named in errors).

  Returns:
    (click seconds, conversion seconds or None, the 17 feature fields as text).

  Raises:
    ConvertError: a wrong field count, a time that is not an integer, or a
      conversion before its click.
  """
  fields = text.split('\t')
  if len(fields) != N_FIELDS:
    raise ConvertError(f'line {line}: {len(fields)} tab-separated fields, expected '
                       f'{N_FIELDS} (click time, conversion time, {N_INT} integer '
                       f'and {N_CAT} categorical features)')
  click = _seconds(fields[0], 'click time', line)
  conversion = _seconds(fields[1], 'conversion time', line) if fields[1] else None
  if conversion is not None and conversion < click:
    # The ExampleGen would reject it too, but only naming the CSV row.
    raise ConvertError(f'line {line}: the conversion time {conversion} is before the '
                       f'click time {click}')
  return click, conversion, fields[2:]


class _Partitions:
  """One open CSV writer per (log, day), files written under `root`."""

  def __init__(self, root: str):
    self._root = root
    self._open: Dict[Tuple[str, datetime.date], Tuple[TextIO, object]] = {}
    self.rows = {CLICKS: 0, CONVERSIONS: 0}
    self.days = {CLICKS: set(), CONVERSIONS: set()}

  def path(self, log: str, day: datetime.date) -> str:
    return os.path.join(self._root, log, f'date={day.isoformat()}')

  def writer(self, log: str, day: datetime.date):
    key = (log, day)
    if key not in self._open:
      directory = self.path(log, day)
      os.makedirs(directory)
      f = open(os.path.join(directory, PART), 'w', newline='', encoding='utf-8')
      w = csv.writer(f, lineterminator='\n')
      w.writerow(HEADERS[log])
      self._open[key] = (f, w)
      self.days[log].add(day)
    return self._open[key][1]

  def write(self, log: str, day: datetime.date, row: Iterable) -> None:
    self.writer(log, day).writerow(row)
    self.rows[log] += 1

  def close(self) -> None:
    for f, _ in self._open.values():
      f.close()
    self._open.clear()


def _day(ts: int) -> datetime.date:
  return datetime.date.fromordinal(datetime.date(1970, 1, 1).toordinal() +
                                   ts // DAY_SECONDS)


def _days(first: datetime.date, last: datetime.date):
  return [first + datetime.timedelta(days=i) for i in range((last - first).days + 1)]


def convert(input_path: str, out: str, start_date: str = DEFAULT_START,
            force: bool = False) -> dict:
  """Streams data.txt into the day-partitioned CSV logs under `out`.

  The logs are written under `out`/.convert-tmp and moved into place only when
  both are complete, markers included: an interrupted run leaves no partition
  that looks complete, and --force replaces old logs only once the new ones are
  there.

  Args:
    input_path: data.txt or data.txt.gz.
    out: the data root (the config's paths.data_root).
    start_date: the UTC day the file's second 0 falls on (YYYY-MM-DD).
    force: replace logs already under `out`.

  Returns:
    The counts and day ranges written.

  Raises:
    ConvertError: on a malformed line (naming it), an empty input, or logs
      already under `out` without `force`.
  """
  start = datetime.date.fromisoformat(start_date)
  epoch = (start - datetime.date(1970, 1, 1)).days * DAY_SECONDS
  existing = [os.path.join(out, log) for log in (CLICKS, CONVERSIONS)
              if os.path.exists(os.path.join(out, log))]
  if existing and not force:
    raise ConvertError(f'{", ".join(existing)} already exist; remove them or pass '
                       '--force to replace them')
  tmp = os.path.join(out, '.convert-tmp')
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  parts = _Partitions(tmp)
  try:
    number = 0
    with open_input(input_path) as lines:
      try:
        for number, text in enumerate(lines, 1):
          click, conversion, features = parse_line(text.rstrip('\r\n'), number)
          click_ts = epoch + click
          parts.write(CLICKS, _day(click_ts), [number, click_ts] + features)
          if conversion is not None:
            conversion_ts = epoch + conversion
            parts.write(CONVERSIONS, _day(conversion_ts),
                        [number, number, conversion_ts])
      except ConvertError as e:
        raise ConvertError(f'{input_path}: {e}') from None
      except UnicodeDecodeError:
        # Decoded in blocks: the bad byte is at or after the next line.
        raise ConvertError(f'{input_path}: not UTF-8 text after line {number}'
                           ) from None
    parts.close()
    if not parts.rows[CLICKS]:
      raise ConvertError(f'{input_path}: no lines')
    first = min(parts.days[CLICKS])
    last = {CLICKS: max(parts.days[CLICKS])}
    last[CONVERSIONS] = max([last[CLICKS]] + list(parts.days[CONVERSIONS]))
    for log in (CLICKS, CONVERSIONS):
      days = _days(first, last[log])
      for day in days:
        if day not in parts.days[log]:
          parts.writer(log, day)  # a header-only file for a day without rows
      parts.close()
      # Markers last, each after its partition's file is closed.
      for day in days:
        open(os.path.join(parts.path(log, day), MARKER), 'w').close()
  except BaseException:
    parts.close()
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  for log in (CLICKS, CONVERSIONS):
    shutil.rmtree(os.path.join(out, log), ignore_errors=True)
    os.replace(os.path.join(tmp, log), os.path.join(out, log))
  os.rmdir(tmp)
  return {'clicks': parts.rows[CLICKS], 'conversions': parts.rows[CONVERSIONS],
          'first_day': first, 'last_click_day': last[CLICKS],
          'last_conversion_day': last[CONVERSIONS],
          'click_partitions': (last[CLICKS] - first).days + 1,
          'conversion_partitions': (last[CONVERSIONS] - first).days + 1}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m examples.criteo_conversion_logs.convert',
      description='Convert the Criteo Conversion Logs (data.txt) into the '
      'day-partitioned CSV logs of examples/criteo_conversion_logs/dataset.yaml.')
  parser.add_argument('--input', required=True, help='data.txt or data.txt.gz')
  parser.add_argument('--out', default=DEFAULT_OUT,
                      help=f'the data root (default: {DEFAULT_OUT}, the '
                      "example config's paths.data_root)")
  parser.add_argument('--start-date', default=DEFAULT_START,
                      help='UTC day of the file\'s second 0 (YYYY-MM-DD; default: '
                      f'{DEFAULT_START}); the collection dates are not published')
  parser.add_argument('--force', action='store_true',
                      help='replace clicks/ and conversions/ already under --out')
  args = parser.parse_args(argv)
  try:
    datetime.date.fromisoformat(args.start_date)
  except ValueError:
    parser.exit(2, f'error: --start-date {args.start_date!r} is not YYYY-MM-DD\n')
  began = time.monotonic()
  try:
    s = convert(args.input, args.out, args.start_date, args.force)
  except (ConvertError, OSError) as e:
    parser.exit(1, f'error: {e}\n')
  print(f'converted {s["clicks"]:,} clicks ({s["first_day"]}..{s["last_click_day"]}, '
        f'{s["click_partitions"]} days) and {s["conversions"]:,} conversions '
        f'(to {s["last_conversion_day"]}, {s["conversion_partitions"]} days) into '
        f'{args.out} in {time.monotonic() - began:.0f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
