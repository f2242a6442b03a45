"""The dataset spec: what an ads team's click and conversion logs hold.

One YAML file per dataset (`datasets/<name>/dataset.yaml`), read into the `dataset`
section of the config (config.loader) and validated there, every error naming the
spec file and the key. It declares:

  source:       where the logs are (TFRecord, Parquet or CSV day partitions, local
                or gs://; or BigQuery tables or queries) and their layout;
  clicks:       the click id and timestamp columns and every feature, with its
                dtype, kind (categorical ids, hashed or mapped strings, numeric,
                log-numeric), role (serving or teacher-only) and domain;
  conversions:  the conversion id (the dedup key), the click id, the timestamp and
                an optional count column;
  windows:      the delay windows, any number, with hour bounds, and the delay
                model's prior (share and scale per window);
  meanings:     optional columns the pipeline gives a meaning: an observability
                segment (the browser) and a first-party flag, tCPA, a measurement
                panel, the panel calibration's groups, extra slices. When one is
                absent the machinery that needs it is off;
  delay:        the columns the delay distribution is fitted by;
  truth:        synthetic data only: the click log carries the truth columns.

Everything downstream (the ExampleGen's join, the TFDV schema, Transform, both
trainers, the serving graph, the Quantizer, TFMA's slices and metrics, the
promotion, the fallback band, the report) reads its columns from here; no module
names a dataset's columns (docs/architecture.md §3).

String ids are hashed to int64 ids at ingestion (the serving graph has no string
ops): FarmHash Fingerprint64 of the UTF-8 bytes modulo 2^63 - 1
(`schemas.codec.hash_strings`, TensorFlow's `tf.strings.to_hash_bucket_fast`); a
string categorical with a `vocabulary` maps each value to its index instead (an
unknown value to the index after the last).
"""

import dataclasses
import re
from typing import Dict, List, Optional, Tuple

from config.base import ConfigError
from config.base import _field
import schemas
from schemas import columns

FORMATS = ('tfrecord', 'parquet', 'csv', 'bigquery')
FILE_FORMATS = ('tfrecord', 'parquet', 'csv')
DTYPES = ('int', 'float', 'string')
KINDS = tuple(k.value for k in columns.Kind)
ROLES = ('serving', 'teacher_only')
# Timestamp units: numbers since the epoch, ISO 8601 strings, a strptime format
# (`format`), or a native timestamp type (Parquet, BigQuery TIMESTAMP).
TIME_UNITS = ('s', 'ms', 'us', 'ns', 'iso8601', 'format', 'timestamp')
MISSING = ('error', 'fill')
_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_WINDOW_NAME = re.compile(r'^[A-Za-z0-9_]+$')


def _identifier(key: str, name: str) -> None:
  if not _NAME.match(name or ''):
    raise ConfigError(f'{key}: {name!r} is not a column name (letters, digits and '
                      '_; it names a TFLite input)')


@dataclasses.dataclass
class IdSpec:
  """An id column: int64 ids, or strings hashed to int64 ids at ingestion."""
  column: str = ''
  dtype: str = _field('int', choices=('int', 'string'))


@dataclasses.dataclass
class TimestampSpec:
  """A timestamp column and how to read it (normalised to epoch seconds)."""
  column: str = ''
  unit: str = _field('s', choices=TIME_UNITS)
  format: str = ''  # strptime format, with unit `format`

  def check(self, key: str) -> None:
    if not self.column:
      raise ConfigError(f'{key}.column: name the timestamp column')
    if (self.unit == 'format') != bool(self.format):
      raise ConfigError(f'{key}.format: a strptime format goes with unit: format '
                        f'(and only with it), got unit {self.unit!r}')

  def dtype(self) -> str:
    """The log column's dtype before normalisation."""
    if self.unit in ('iso8601', 'format'):
      return 'string'
    return 'timestamp' if self.unit == 'timestamp' else 'int'


@dataclasses.dataclass
class FeatureSpec:
  """A model feature: how it is stored in the log and how the models read it."""
  name: str = ''
  column: str = ''  # the log's column; empty: `name`
  dtype: str = _field('int', choices=DTYPES)
  kind: str = _field('numeric', choices=KINDS)
  buckets: int = _field(0, min=0)  # categorical: floormod bucket count
  vocabulary: List[str] = _field(default_factory=list)  # strings -> index
  role: str = _field('serving', choices=ROLES)
  group: str = ''
  min: Optional[float] = None
  max: Optional[float] = None
  # A missing (or NaN) value: `error` fails the run naming the file and column;
  # `fill` uses `fill` (numbers) or '' (strings: hashed, or out of vocabulary).
  missing: str = _field('error', choices=MISSING)
  fill: float = 0.0

  def check(self, key: str) -> None:
    _identifier(f'{key}.name', self.name)
    if columns.is_reserved(self.name):
      raise ConfigError(f'{key}.name: {self.name!r} is a column the pipeline writes')
    categorical = self.kind == columns.Kind.CATEGORICAL.value
    if self.dtype == 'string' and not categorical:
      raise ConfigError(f'{key}.kind: a string feature is categorical (hashed to '
                        f'ids, or mapped by a vocabulary), got {self.kind!r}')
    if self.vocabulary and self.dtype != 'string':
      raise ConfigError(f'{key}.vocabulary: only a string feature has one')
    if categorical:
      if self.dtype == 'float':
        raise ConfigError(f'{key}.dtype: a categorical feature holds int ids or '
                          'strings, not floats')
      if self.vocabulary:
        if len(set(self.vocabulary)) != len(self.vocabulary):
          raise ConfigError(f'{key}.vocabulary: repeated values')
        if self.buckets and self.buckets != len(self.vocabulary) + 1:
          raise ConfigError(f'{key}.buckets: a vocabulary of {len(self.vocabulary)} '
                            f'has {len(self.vocabulary) + 1} ids (one for unknown '
                            'values); leave buckets out')
      elif self.buckets <= 0:
        raise ConfigError(f'{key}.buckets: a categorical feature needs its bucket '
                          'count (ids are folded into it with floormod)')
    elif self.buckets or self.vocabulary:
      raise ConfigError(f'{key}.buckets: only a categorical feature has buckets')
    if self.min is not None and self.max is not None and self.min > self.max:
      raise ConfigError(f'{key}.min: {self.min} is above {key}.max {self.max}')

  def log_column(self) -> str:
    return self.column or self.name

  def bucket_count(self) -> int:
    return len(self.vocabulary) + 1 if self.vocabulary else self.buckets

  def to_column(self) -> columns.Column:
    """The feature as the examples hold it (strings become int64 ids)."""
    categorical = self.kind == columns.Kind.CATEGORICAL.value
    lo = self.min
    hi = self.max
    if categorical:
      lo = 0 if lo is None else lo
      if self.vocabulary:
        hi = len(self.vocabulary)
    return columns.Column(
        self.name, columns.Role(self.role), 'float' if self.dtype == 'float' else 'int',
        columns.Kind(self.kind), buckets=self.bucket_count() if categorical else None,
        group=self.group or None, min=lo, max=hi)


@dataclasses.dataclass
class ClickLogSpec:
  """The click log: one row per click."""
  id: IdSpec = _field(default_factory=IdSpec)
  timestamp: TimestampSpec = _field(default_factory=TimestampSpec)
  features: List[FeatureSpec] = _field(default_factory=list)

  def check(self, key: str) -> None:
    if not self.id.column:
      raise ConfigError(f'{key}.id.column: name the click id column')
    if not self.features:
      raise ConfigError(f'{key}.features: declare at least one feature')
    names = [f.name for f in self.features]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
      raise ConfigError(f'{key}.features: {repeated} declared more than once')
    if not any(f.role == 'serving' for f in self.features):
      raise ConfigError(f'{key}.features: no serving feature (role: serving); the '
                        'student reads only those')


@dataclasses.dataclass
class ConversionLogSpec:
  """The conversion log: one row per reported conversion (or `count` of them)."""
  id: IdSpec = _field(default_factory=IdSpec)
  click_id: str = ''  # the column holding the click's id (dtype of clicks.id)
  timestamp: TimestampSpec = _field(default_factory=TimestampSpec)
  count: str = ''  # optional: a row stands for this many conversions

  def check(self, key: str) -> None:
    if not self.id.column:
      raise ConfigError(f'{key}.id.column: name the conversion id column (the '
                        'dedup key: a re-delivered row has the same id)')
    if not self.click_id:
      raise ConfigError(f'{key}.click_id: name the column holding the click id')


@dataclasses.dataclass
class WindowSpec:
  """A delay window [start_hours, end_hours) and the delay model's prior in it:
  the share of conversions in the window and the scale of its truncated
  exponential (the model `delay.source: prior` uses, and the fit shrinks to)."""
  name: str = ''
  start_hours: float = _field(0.0, min=0.0)
  end_hours: float = _field(1.0, min=0.0, min_exclusive=True)
  prior_share: float = _field(1.0, min=0.0, max=1.0)
  prior_scale_hours: float = _field(1.0, min=0.0, min_exclusive=True)

  def check(self, key: str) -> None:
    if not _WINDOW_NAME.match(self.name or ''):
      raise ConfigError(f'{key}.name: {self.name!r}: letters, digits and _ only '
                        '(it names columns, e.g. conversions_<name>)')
    if self.end_hours <= self.start_hours:
      raise ConfigError(f'{key}.end_hours: {self.end_hours:g} is not after '
                        f'start_hours {self.start_hours:g} (an empty window)')


@dataclasses.dataclass
class LogSourceSpec:
  """Where one log is.

  Files: `path`, a day-partition directory pattern with `{date}` (YYYY-MM-DD, or
  a strftime format as in `{date:%Y%m%d}`), relative to paths.data_root unless
  absolute or a URI (gs://); every file in a partition is read, and a partition
  needs `complete_marker` (empty: none). BigQuery: a `table`
  (project.dataset.table) or a `query`; the as-of-T window is pushed into the SQL.
  """
  path: str = ''
  complete_marker: str = '_SUCCESS'
  table: str = ''
  query: str = ''


@dataclasses.dataclass
class SourceSpec:
  """The logs' format and location."""
  format: str = _field('tfrecord', choices=FORMATS)
  clicks: LogSourceSpec = _field(default_factory=lambda: LogSourceSpec(
      path='clicks/date={date}'))
  conversions: LogSourceSpec = _field(default_factory=lambda: LogSourceSpec(
      path='conversions/date={date}'))
  csv_delimiter: str = ','
  # BigQuery: the project the queries bill to (empty: vertex.project).
  project: str = ''

  def check(self, key: str) -> None:
    for log in ('clicks', 'conversions'):
      s = getattr(self, log)
      k = f'{key}.{log}'
      if self.format == 'bigquery':
        if bool(s.table) == bool(s.query):
          raise ConfigError(f'{k}: a BigQuery source needs a table or a query '
                            '(one of them)')
      else:
        if '{date' not in s.path:
          raise ConfigError(f'{k}.path: {s.path!r} needs a {{date}} placeholder '
                            '(the logs are read by day partition)')
        if s.table or s.query:
          raise ConfigError(f'{k}.table: only a bigquery source has tables or '
                            'queries')
    if len(self.csv_delimiter) != 1:
      raise ConfigError(f'{key}.csv_delimiter: one character, got '
                        f'{self.csv_delimiter!r}')


@dataclasses.dataclass
class MeaningsSpec:
  """Click-log columns the pipeline gives a meaning; each optional.

  observability_segment: an int-id categorical (ids index observability.browsers;
    a string feature with a vocabulary gives such ids): f_b, the priors, the
    `browser_observability` slice, the fallback band's key. Absent: every
    conversion counts as observed (observability priors off), slices and the
    band pooled.
  first_party: a 0/1 column (the priors' second key; absent: 0).
  target_cpa: tCPA (> 0): the tCPA slices, the spend proxy, the distillation
    weights. Absent: no tCPA slices; the business area judges overall spend
    calibration; no tCPA weighting.
  panel: a 0/1 column of measurement-panel clicks (all conversions reported;
    offline only, never a model input). Absent: the panel label mode, the panel
    recipes and calibration are unavailable.
  panel_calibration_groups: categorical features the panel calibration corrects
    observability by, coarse to fine (needs the panel and the segment).
  slices: extra categorical features TFMA slices by.
  """
  observability_segment: str = ''
  first_party: str = ''
  target_cpa: str = ''
  panel: str = ''
  panel_calibration_groups: List[str] = _field(default_factory=list)
  slices: List[str] = _field(default_factory=list)


@dataclasses.dataclass
class DelayFitSpec:
  """How the delay distribution is fitted from the logs: by the values of one
  categorical feature (empty: pooled)."""
  segment_by: str = ''


@dataclasses.dataclass
class DatasetSpec:
  """A dataset: its logs, features, delay windows and the columns with meaning."""
  name: str = ''
  description: str = ''
  source: SourceSpec = _field(default_factory=SourceSpec)
  clicks: ClickLogSpec = _field(default_factory=ClickLogSpec)
  conversions: ConversionLogSpec = _field(default_factory=ConversionLogSpec)
  windows: List[WindowSpec] = _field(default_factory=list)
  meanings: MeaningsSpec = _field(default_factory=MeaningsSpec)
  delay: DelayFitSpec = _field(default_factory=DelayFitSpec)
  # Synthetic data: the click log carries true_rate_<w>, true_conversions and
  # true_observability_<w> (only benchmarks and the truth label mode read them).
  truth: bool = False

  # --- Checks ------------------------------------------------------------------

  def check(self, key: str) -> None:
    if not self.name:
      raise ConfigError(f'{key}.name: name the dataset')
    self._check_windows(key)
    self._check_meanings(key)
    seg = self.delay.segment_by
    if seg and not self._categorical(seg):
      raise ConfigError(f'{key}.delay.segment_by: {seg!r} is not a categorical '
                        'feature of clicks.features')
    log_names = [self.clicks.id.column, self.clicks.timestamp.column] + [
        f.log_column() for f in self.clicks.features] + list(self.passthrough())
    repeated = sorted({n for n in log_names if log_names.count(n) > 1})
    if repeated:
      raise ConfigError(f'{key}.clicks: the log column(s) {repeated} are read twice '
                        '(an id, timestamp or feature each)')

  def _check_windows(self, key: str) -> None:
    k = f'{key}.windows'
    if not self.windows:
      raise ConfigError(f'{k}: declare at least one delay window')
    names = [w.name for w in self.windows]
    if len(set(names)) != len(names):
      raise ConfigError(f'{k}: repeated window names {names}')
    for i in range(1, len(self.windows)):
      a, b = self.windows[i - 1], self.windows[i]
      if b.start_hours < a.end_hours:
        raise ConfigError(f'{k}[{i}].start_hours: {b.name} [{b.start_hours:g}, '
                          f'{b.end_hours:g}) overlaps or precedes {a.name} '
                          f'[{a.start_hours:g}, {a.end_hours:g}); windows are '
                          'sorted and disjoint')
    total = sum(w.prior_share for w in self.windows)
    if abs(total - 1.0) > 1e-6:
      raise ConfigError(f'{k}: the prior_share values sum to {total:g}, not 1')

  def _categorical(self, name: str) -> bool:
    f = self.feature_or_none(name)
    return f is not None and f.kind == columns.Kind.CATEGORICAL.value

  def _check_meanings(self, key: str) -> None:
    m = self.meanings
    k = f'{key}.meanings'
    for name in ('observability_segment', 'first_party', 'target_cpa', 'panel'):
      column = getattr(m, name)
      if column:
        _identifier(f'{k}.{name}', column)
        if columns.is_reserved(column):
          raise ConfigError(f'{k}.{name}: {column!r} is a column the pipeline writes')
        if column in (self.clicks.id.column, self.clicks.timestamp.column):
          raise ConfigError(f'{k}.{name}: {column!r} is the click id or timestamp')
    if m.observability_segment:
      f = self.feature_or_none(m.observability_segment)
      if f is not None and f.kind != columns.Kind.CATEGORICAL.value:
        raise ConfigError(f'{k}.observability_segment: {f.name!r} is {f.kind}; the '
                          'segment is a categorical id (ids index '
                          'observability.browsers)')
      if f is not None and f.dtype == 'string' and not f.vocabulary:
        raise ConfigError(f'{k}.observability_segment: {f.name!r} is a hashed '
                          'string; give it a vocabulary (its ids then index '
                          'observability.browsers)')
    if m.first_party and not m.observability_segment:
      raise ConfigError(f'{k}.first_party: the priors it keys need an '
                        'observability_segment')
    if m.target_cpa:
      f = self.feature_or_none(m.target_cpa)
      if f is not None and f.kind == columns.Kind.CATEGORICAL.value:
        raise ConfigError(f'{k}.target_cpa: {f.name!r} is categorical; tCPA is a '
                          'number')
    if m.panel and self.feature_or_none(m.panel) is not None:
      raise ConfigError(f'{k}.panel: {m.panel!r} is a model feature; panel '
                        'membership is offline only, never a model input')
    if m.panel_calibration_groups:
      if not (m.panel and m.observability_segment):
        raise ConfigError(f'{k}.panel_calibration_groups: the calibration needs a '
                          'panel and an observability_segment')
      for i, g in enumerate(m.panel_calibration_groups):
        if not self._categorical(g):
          raise ConfigError(f'{k}.panel_calibration_groups[{i}]: {g!r} is not a '
                            'categorical feature')
    for i, s in enumerate(m.slices):
      if not self._categorical(s):
        raise ConfigError(f'{k}.slices[{i}]: {s!r} is not a categorical feature')

  # --- What the pipeline reads -------------------------------------------------

  def feature_or_none(self, name: str) -> Optional[FeatureSpec]:
    for f in self.clicks.features:
      if f.name == name:
        return f
    return None

  def feature(self, name: str) -> FeatureSpec:
    f = self.feature_or_none(name)
    if f is None:
      raise KeyError(f'{name!r} is not a feature of dataset {self.name!r}')
    return f

  def window_tuple(self) -> Tuple[columns.Window, ...]:
    return tuple(columns.Window(w.name, w.start_hours, w.end_hours)
                 for w in self.windows)

  def window_names(self) -> Tuple[str, ...]:
    return tuple(w.name for w in self.windows)

  def prior_shares(self) -> Tuple[float, ...]:
    return tuple(w.prior_share for w in self.windows)

  def prior_scales(self) -> Tuple[float, ...]:
    return tuple(w.prior_scale_hours for w in self.windows)

  def features(self, role: Optional[str] = None) -> Tuple[columns.Column, ...]:
    """The model features (of `role`) as the examples hold them, in spec order."""
    return tuple(f.to_column() for f in self.clicks.features
                 if role is None or f.role == role)

  def serving_features(self) -> Tuple[columns.Column, ...]:
    return self.features('serving')

  def teacher_features(self) -> Tuple[columns.Column, ...]:
    """Serving then teacher-only features: what the teacher reads."""
    return self.features('serving') + self.features('teacher_only')

  def serving_names(self) -> Tuple[str, ...]:
    return tuple(c.name for c in self.serving_features())

  @property
  def segment(self) -> str:
    return self.meanings.observability_segment

  @property
  def first_party(self) -> str:
    return self.meanings.first_party

  @property
  def tcpa(self) -> str:
    return self.meanings.target_cpa

  @property
  def panel(self) -> str:
    return self.meanings.panel

  def passthrough(self) -> Dict[str, columns.Column]:
    """Meaning columns that are not model features, by name (carried through)."""
    m = self.meanings
    out = {}
    candidates = ((m.observability_segment, 'int', 0, None),
                  (m.first_party, 'int', 0, 1),
                  (m.target_cpa, 'float', None, None),
                  (m.panel, 'int', 0, 1))
    for name, dtype, lo, hi in candidates:
      if name and self.feature_or_none(name) is None and name not in out:
        out[name] = columns.Column(name, columns.Role.MEANING, dtype, min=lo, max=hi)
    return out

  def click_log_columns(self) -> Tuple[columns.Column, ...]:
    """Every column the ExampleGen reads from the click log, as examples hold it
    (truth columns, if any, optional)."""
    out = [columns.Column(columns.CLICK_ID, columns.Role.TIME, 'int', min=0),
           columns.Column(columns.CLICK_TS, columns.Role.TIME, 'int', min=0)]
    out += list(self.features()) + list(self.passthrough().values())
    if self.truth:
      out += [c for c in self.pipeline_columns() if c.role == columns.Role.TRUTH]
    return tuple(out)

  def pipeline_columns(self) -> Tuple[columns.Column, ...]:
    return columns.pipeline_columns(self.window_names(), tcpa=bool(self.tcpa),
                                    segment=bool(self.segment), truth=self.truth)

  def example_columns(self) -> Tuple[columns.Column, ...]:
    """Every column of the joined examples (the TFDV schema's features), teacher
    columns included (schema environment DISTILL)."""
    snapshot = columns.Column(columns.SNAPSHOT_TS, columns.Role.TIME, 'int', min=0)
    log = [c for c in self.click_log_columns() if c.role != columns.Role.TRUTH]
    return tuple(log[:2] + [snapshot] + log[2:] + list(self.pipeline_columns()))

  def column(self, name: str) -> columns.Column:
    for c in self.example_columns():
      if c.name == name:
        return c
    raise KeyError(f'{name!r} is not a column of dataset {self.name!r}')

  def slice_columns(self) -> Tuple[str, ...]:
    """What TFMA slices by: the tCPA bucket and the segment's observability when
    the dataset has them, and the spec's extra slices."""
    out = []
    if self.tcpa:
      out.append(columns.TCPA_BUCKET)
    if self.segment:
      out.append(columns.BROWSER_OBSERVABILITY)
    return tuple(out + list(self.meanings.slices))

  def summary(self) -> List[str]:
    """One line per optional meaning that is absent, and what is off because of
    it (the run summary and report print them once)."""
    off = []
    if not self.segment:
      off.append('no observability segment: observability priors, the '
                 'browser_observability slice and a keyed fallback band are off')
    if not self.tcpa:
      off.append('no tCPA: no tCPA slices or weights; the business area judges '
                 'overall spend calibration')
    if not self.panel:
      off.append('no measurement panel: the panel label mode, recipes and '
                 'calibration are off')
    if not self.truth:
      off.append('no truth columns: models are scored on reported conversions')
    return off

  def hashed_names(self) -> Tuple[str, ...]:
    """Serving features whose string values are hashed at ingestion."""
    return tuple(f.name for f in self.clicks.features
                 if f.dtype == 'string' and not f.vocabulary)


def schema_text(spec: DatasetSpec) -> str:
  """The dataset's TFDV schema (ImportSchemaGen's file), generated from its spec."""
  return schemas.to_text(schemas.build_schema(spec.example_columns()))


def contract_markdown(spec: DatasetSpec) -> str:
  """The serving input contract of the dataset's student TFLite model: the
  inputs by name, their dtypes and how string ids are made."""
  lines = [f'# Serving input contract: {spec.name}', '',
           'Generated from the dataset spec by `python -m pipeline.cli schema`. The '
           'pushed model.tflite takes one [batch, 1] tensor per serving feature, '
           'named as below, and returns pConvs [batch, 1] (expected conversions '
           'over every delay window).', '',
           '| input | dtype | from the log | how |', '|---|---|---|---|']
  for f in spec.clicks.features:
    if f.role != 'serving':
      continue
    if f.vocabulary:
      how = (f'index in the vocabulary {f.vocabulary} ({len(f.vocabulary)} for '
             'any other value)')
    elif f.dtype == 'string':
      how = ('FarmHash Fingerprint64 of the UTF-8 bytes modulo 2^63 - 1 '
             '(tf.strings.to_hash_bucket_fast(x, 2**63 - 1))')
    elif f.kind == columns.Kind.CATEGORICAL.value:
      how = f'the id as is (the model folds it into {f.buckets} buckets)'
    else:
      how = 'the value as is' + (' (log1p inside the model)'
                                 if f.kind == columns.Kind.LOG_NUMERIC.value else '')
    missing = f'; missing: {f.fill:g}' if f.missing == 'fill' and f.dtype != 'string' \
        else ("; missing: ''" if f.missing == 'fill' else '')
    dtype = 'float32' if f.dtype == 'float' else 'int64'
    lines.append(f'| `{f.name}` | {dtype} | `{f.log_column()}` ({f.dtype}) | '
                 f'{how}{missing} |')
  return '\n'.join(lines) + '\n'

