"""The ExampleGen on a dataset of another shape, from every source it reads.

The app-installs logs (tests/app_installs.py: string ids and categoricals,
missing values, millisecond and ISO 8601 timestamps, three hour-scale windows)
written as TFRecord, Parquet and CSV day partitions give the same examples; read
from BigQuery (Beam's ReadFromBigQuery patched to return the same rows, as TFX's
own BigQueryExampleGen tests do) they give the same examples too, and the SQL
carries the as-of-T window.
"""

import datetime
import os
from unittest import mock

import apache_beam as beam
import numpy as np
import pytest

import config as config_lib
from components.example_gen import executor
from components.example_gen import sources
from observation import snapshot
from schemas import codec
from schemas import columns
from schemas import records
from tests import app_installs
from tests import helpers

DAYS = 4
WINDOW_DAYS = 3
T = app_installs.START + datetime.timedelta(days=DAYS)


@pytest.fixture(scope='module')
def logs():
  return app_installs.generate(n=3000, days=DAYS, seed=4)


def config(tmp_path, fmt, overrides=()):
  spec = app_installs.write_spec(str(tmp_path / f'{fmt}.yaml'), fmt)
  return config_lib.load_config(None, [f'dataset_file={spec}'] + app_installs.OVERRIDES
                                + list(overrides))


def examples_of(cfg, root, out):
  helpers.run_example_gen(cfg, root, out, window_days=WINDOW_DAYS,
                          **{executor.SNAPSHOT_TIME_KEY: T.isoformat()})
  rows = {}
  for split in ('train', 'eval'):
    cols = records.read_examples(os.path.join(out, f'Split-{split}'))
    order = np.argsort(cols[columns.CLICK_ID], kind='stable')
    rows[split] = {k: np.asarray(v)[order] for k, v in cols.items()}
  return rows


@pytest.fixture(scope='module')
def from_tfrecord(logs, tmp_path_factory):
  tmp = tmp_path_factory.mktemp('tfrecord')
  root = app_installs.write(logs, str(tmp / 'logs'), 'tfrecord')
  cfg = config(tmp, 'tfrecord')
  return cfg, examples_of(cfg, root, str(tmp / 'examples'))


def test_string_ids_and_values_become_the_documented_ints(logs, from_tfrecord):
  cfg, rows = from_tfrecord
  taps = logs['taps']
  merged = {k: np.concatenate([rows['train'][k], rows['eval'][k]])
            for k in rows['train']}
  by_id = np.argsort(merged[columns.CLICK_ID])
  merged = {k: v[by_id] for k, v in merged.items()}
  start = snapshot.to_ts(T) - WINDOW_DAYS * 86400
  in_window = (taps['tap_time_ms'] // 1000 >= start) & (
      taps['tap_time_ms'] // 1000 < snapshot.to_ts(T))
  ids = codec.hash_strings(taps['tap_id'][in_window])
  order = np.argsort(ids)
  np.testing.assert_array_equal(merged[columns.CLICK_ID], ids[order])
  np.testing.assert_array_equal(merged[columns.CLICK_TS],
                                (taps['tap_time_ms'][in_window] // 1000)[order])
  campaign = taps['campaign'][in_window][order]
  want = codec.hash_strings(['' if c is None else c for c in campaign])
  np.testing.assert_array_equal(merged['campaign'], want)  # '' for a missing one
  assert (campaign == None).any()  # pylint: disable=singleton-comparison
  np.testing.assert_array_equal(merged['os'],
                                (taps['os'][in_window][order] == 'ios').astype(int))
  bid = taps['bid_floor'][in_window][order]
  np.testing.assert_allclose(merged['bid_floor'],
                             [0.0 if b is None else b for b in bid], rtol=1e-6)
  # Only the spec's columns and the pipeline's: device_score is not declared.
  assert 'device_score' not in merged and 'tap_id' not in merged
  assert set(merged) == {c.name for c in cfg.dataset.example_columns()
                         if c.role != columns.Role.TEACHER}
  # Three hour-scale windows; installs joined by the hashed tap id.
  labels = np.stack([merged[c] for c in columns.labels(cfg.dataset.window_names())], 1)
  assert labels.shape[1] == 3 and labels.sum() > 20
  assert columns.TCPA_BUCKET not in merged
  assert columns.BROWSER_OBSERVABILITY not in merged


@pytest.mark.parametrize('fmt', ['parquet', 'csv'])
def test_parquet_and_csv_give_the_same_examples_as_tfrecords(logs, from_tfrecord,
                                                             tmp_path, fmt):
  _, want = from_tfrecord
  root = app_installs.write(logs, str(tmp_path / 'logs'), fmt)
  got = examples_of(config(tmp_path, fmt), root, str(tmp_path / 'examples'))
  for split in ('train', 'eval'):
    assert set(got[split]) == set(want[split])
    for name in want[split]:
      np.testing.assert_array_equal(got[split][name], want[split][name],
                                    err_msg=f'{fmt} {split} {name}')


BQ = ['dataset.source.format=bigquery',
      'dataset.source.clicks={table: ads-project.logs.taps}',
      'dataset.source.conversions={query: "SELECT * FROM `ads-project.logs.installs`"}',
      'dataset.source.project=ads-project', 'window.snapshot_policy=execution_midnight']


def test_bigquery_sql_pushes_the_as_of_t_window(tmp_path):
  cfg = config(tmp_path, 'tfrecord', BQ)
  start = T - datetime.timedelta(days=WINDOW_DAYS)
  taps = sources.bigquery_sql(cfg.dataset, sources.CLICKS, ['tap_id', 'tap_time_ms'],
                              start, T)
  assert taps == (
      'SELECT `tap_id`, `tap_time_ms` FROM `ads-project.logs.taps` AS log WHERE '
      "`tap_time_ms` >= UNIX_MILLIS(TIMESTAMP('2026-03-02 00:00:00+00')) AND "
      "`tap_time_ms` < UNIX_MILLIS(TIMESTAMP('2026-03-05 00:00:00+00'))")
  installs = sources.bigquery_sql(cfg.dataset, sources.CONVERSIONS,
                                  ['install_id', 'install_time'], start, T)
  assert installs.startswith('SELECT `install_id`, `install_time` FROM (SELECT * '
                             'FROM `ads-project.logs.installs`) AS log WHERE ')
  # Reported by T (inclusive), the window's first instant on.
  assert installs.endswith(
      "TIMESTAMP(`install_time`) >= TIMESTAMP('2026-03-02 00:00:00+00') AND "
      "TIMESTAMP(`install_time`) <= TIMESTAMP('2026-03-05 00:00:00+00')")


def test_bigquery_rows_give_the_same_examples(logs, from_tfrecord, tmp_path):
  """The executor with Beam's ReadFromBigQuery patched to the logs' rows (typed
  as BigQuery returns them: a TIMESTAMP column as datetimes)."""
  _, want = from_tfrecord
  cfg = config(tmp_path, 'tfrecord', BQ + [
      'dataset.conversions.timestamp={column: install_time, unit: timestamp}'])
  queries = []

  def rows_of(log):
    cols = logs['taps' if log == sources.CLICKS else 'installs']
    n = len(next(iter(cols.values())))
    out = []
    for i in range(n):
      row = {k: (v[i].item() if hasattr(v[i], 'item') else v[i])
             for k, v in cols.items() if not k.startswith('_')}
      if log == sources.CONVERSIONS:
        row['install_time'] = datetime.datetime.fromtimestamp(
            cols['_ms'][i] / 1000, datetime.timezone.utc)
      out.append({k: v for k, v in row.items() if v is not None})
    return out

  def fake_read(pipeline, label, query, project):
    queries.append((label, query, project))
    log = sources.CLICKS if 'taps' in query else sources.CONVERSIONS
    return pipeline | label >> beam.Create(rows_of(log))

  with mock.patch.object(sources, 'read_bigquery', fake_read):
    got = examples_of(cfg, '', str(tmp_path / 'examples'))
  assert [q[2] for q in queries] == ['ads-project', 'ads-project']
  assert all('WHERE' in q[1] for q in queries)
  for split in ('train', 'eval'):
    for name in want[split]:
      np.testing.assert_array_equal(got[split][name], want[split][name],
                                    err_msg=f'bigquery {split} {name}')
