"""A second dataset of another shape, generated for the tests: app installs.

Nothing like the synthetic world: string ids (taps and installs), string
categoricals (one hashed, one with a vocabulary), missing values, timestamps in
milliseconds and ISO 8601 text, three hour-scale delay windows (installs come
within a day, most within the hour), sparse conversions, one teacher-only
feature, and no browser, tCPA, measurement panel or truth. The same logs are
written as TFRecord, Parquet or CSV day partitions (`dt=YYYYmmdd`).

The click log also carries `device_score`, which the base spec does not declare:
adding it to the spec is the one-line change tests/test_dataset_e2e.py makes.
"""

import datetime
import os
from typing import Dict, Optional

import numpy as np
import pyarrow as pa
from pyarrow import csv as pa_csv
from pyarrow import parquet as pq
import tensorflow as tf

START = datetime.datetime(2026, 3, 1, tzinfo=datetime.timezone.utc)
DAY_MS = 86_400_000
MARKER = '_SUCCESS'

SPEC = """\
# App installs: a dataset of another shape than the synthetic world's (tests only).
name: app_installs
source:
  format: {format}
  clicks: {{path: "taps/dt={{date:%Y%m%d}}"}}
  conversions: {{path: "installs/dt={{date:%Y%m%d}}"}}
clicks:
  id: {{column: tap_id, dtype: string}}
  timestamp: {{column: tap_time_ms, unit: ms}}
  features:
    - {{name: campaign, dtype: string, kind: categorical, buckets: 256, missing: fill}}
    - {{name: os, dtype: string, kind: categorical, vocabulary: [android, ios]}}
    - {{name: placement, dtype: string, kind: categorical, buckets: 64}}
    - {{name: bid_floor, dtype: float, kind: log_numeric, min: 0, missing: fill}}
    - {{name: user_age_days, dtype: int, kind: log_numeric, min: 0}}
    - {{name: session_depth, dtype: float, kind: numeric, role: teacher_only}}
conversions:
  id: {{column: install_id, dtype: string}}
  click_id: tap_id
  timestamp: {{column: install_time, unit: iso8601}}
windows:
  - {{name: 0_1h, start_hours: 0, end_hours: 1, prior_share: 0.5, prior_scale_hours: 0.3}}
  - {{name: 1_6h, start_hours: 1, end_hours: 6, prior_share: 0.3, prior_scale_hours: 2}}
  - {{name: 6_24h, start_hours: 6, end_hours: 24, prior_share: 0.2, prior_scale_hours: 8}}
"""
# The one-line change that adds a serving feature (the logs already hold it).
EXTRA_FEATURE = (
    '    - {name: device_score, dtype: float, kind: numeric}\n')
SERVING = ('campaign', 'os', 'placement', 'bid_floor', 'user_age_days')

# What a pipeline config for this dataset sets: no truth, no panel, no segment.
OVERRIDES = [
    'eval.label_mode=observed_observable', 'teacher_gate.mode=observed',
    'fallback.target=candidate', 'model.teacher_panel_calibration=false',
    'observability.priors_source=config', 'pipeline_name=app-installs',
]

# True delay model: shares and truncated-exponential scales per window (hours).
_WINDOWS = ((0.0, 1.0), (1.0, 6.0), (6.0, 24.0))
_SHARES = (0.6, 0.3, 0.1)
_SCALES = (0.25, 1.5, 5.0)


def write_spec(path: str, fmt: str = 'tfrecord', extra_feature: bool = False) -> str:
  text = SPEC.format(format=fmt)
  if extra_feature:
    text = text.replace('conversions:\n', EXTRA_FEATURE + 'conversions:\n', 1)
  with open(path, 'w') as f:
    f.write(text)
  return path


def _delays(rng, n):
  window = rng.choice(3, n, p=_SHARES)
  lo = np.array([w[0] for w in _WINDOWS])[window]
  length = np.array([w[1] - w[0] for w in _WINDOWS])[window]
  scale = np.asarray(_SCALES)[window]
  u = rng.random(n)
  offset = -scale * np.log1p(-u * -np.expm1(-length / scale))
  return lo + np.minimum(offset, np.nextafter(length, 0))


def generate(n: int = 20_000, days: int = 8, seed: int = 0) -> Dict:
  """The logs as columns: {'taps': {...}, 'installs': {...}} (None = missing)."""
  rng = np.random.default_rng(seed)
  tap_ms = np.sort(rng.integers(0, days * DAY_MS, n)) + int(START.timestamp() * 1000)
  campaign_id = np.minimum(rng.zipf(1.4, n), 400)
  campaign = np.array([f'cmp-{c:04d}' for c in campaign_id], dtype=object)
  campaign[rng.random(n) < 0.03] = None
  ios = rng.random(n) < 0.4
  os_ = np.where(ios, 'ios', 'android').astype(object)
  placement_id = rng.integers(0, 40, n)
  placement = np.array([f'pl-{p}' for p in placement_id], dtype=object)
  bid = rng.lognormal(0.0, 0.7, n)
  bid_floor = bid.astype(object)
  bid_floor[rng.random(n) < 0.05] = None
  user_age = rng.poisson(30, n).astype(np.int64)
  session_depth = rng.normal(0, 1, n)
  device_score = rng.normal(0, 1, n)
  effect = np.random.default_rng(seed + 1).normal(0, 0.6, 401)
  log_rate = (np.log(0.04) + effect[campaign_id] + 0.5 * ios +
              0.3 * np.sin(placement_id) - 0.3 * np.log(bid) +
              0.6 * session_depth + 0.4 * device_score)
  installs = rng.poisson(np.exp(log_rate))
  owner = np.repeat(np.arange(n), installs)
  install_ms = tap_ms[owner] + (_delays(rng, len(owner)) * 3_600_000).astype(np.int64)
  tap_id = np.array([f'tap-{seed}-{i:07d}' for i in range(n)], dtype=object)
  install_time = np.array([
      datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
          '%Y-%m-%dT%H:%M:%S.%fZ') for ms in install_ms], dtype=object)
  return {
      'taps': {'tap_id': tap_id, 'tap_time_ms': tap_ms, 'campaign': campaign,
               'os': os_, 'placement': placement, 'bid_floor': bid_floor,
               'user_age_days': user_age, 'session_depth': session_depth,
               'device_score': device_score},
      'installs': {'install_id': np.array([f'inst-{i:07d}' for i in range(len(owner))],
                                          dtype=object),
                   'tap_id': tap_id[owner], 'install_time': install_time,
                   '_ms': install_ms},
      'days': days,
  }


def _day_of(ms):
  return ((np.asarray(ms, np.int64) - int(START.timestamp() * 1000)) // DAY_MS)


def _example(row: Dict) -> bytes:
  feats = {}
  for name, value in row.items():
    if value is None:
      continue  # a missing value: the feature is absent
    if isinstance(value, str):
      feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[value.encode()]))
    elif isinstance(value, (int, np.integer)):
      feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
    else:
      feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
  return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def _table(cols: Dict, sel) -> pa.Table:
  out = {}
  for name, values in cols.items():
    if name.startswith('_'):
      continue
    v = np.asarray(values)[sel]
    if v.dtype == object:
      if name == 'bid_floor':
        out[name] = pa.array([None if x is None else float(x) for x in v], pa.float64())
      else:
        out[name] = pa.array(list(v), pa.string())
    else:
      out[name] = pa.array(v)
  return pa.table(out)


def write(logs: Dict, root: str, fmt: str = 'tfrecord',
          days: Optional[int] = None) -> str:
  """Writes both logs as `fmt` day partitions with markers under `root`."""
  days = days or logs['days']
  for log, folder, ms in (('taps', 'taps', logs['taps']['tap_time_ms']),
                          ('installs', 'installs', logs['installs']['_ms'])):
    cols = logs[log]
    day = _day_of(ms)
    for d in range(days + 2):  # installs run a day past the last tap
      date = (START + datetime.timedelta(days=d)).strftime('%Y%m%d')
      part = os.path.join(root, folder, f'dt={date}')
      os.makedirs(part, exist_ok=True)
      sel = np.flatnonzero(day == d)
      path = os.path.join(part, f'part-00000.{fmt}')
      if fmt == 'tfrecord':
        names = [n for n in cols if not n.startswith('_')]
        with tf.io.TFRecordWriter(path, options='GZIP') as w:
          for i in sel:
            w.write(_example({n: cols[n][i] for n in names}))
      elif fmt == 'parquet':
        pq.write_table(_table(cols, sel), path)
      elif fmt == 'csv':
        pa_csv.write_csv(_table(cols, sel), path)
      else:
        raise ValueError(fmt)
      with open(os.path.join(part, MARKER), 'w'):
        pass
  return root
