"""Bad input: one planted defect per class, each stopping the ExampleGen with a
one-line message naming the file (or partition), the column and the rule.

The ExampleGen is the DAG's first node, so its failure stops the run before
anything is trained or pushed (test_bad_input_e2e.py shows it once on the whole
DAG); here each class runs the executor alone, and each test also checks that
no example file was published for a downstream node to read.

The world: `small_world` (6 days, 2026-01-01..06); the window is the last 3 days
(T = 2026-01-07), so every defect is planted in a partition the window reads.
"""

import gzip
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from components.example_gen import inputs
from components.example_gen import window as window_lib
from schemas import codec
from schemas import columns
from schemas import layout
from schemas import records
from tests import helpers
from world import synthetic

DAY = 'date=2026-01-05'


@pytest.fixture
def world(small_world, tmp_path):
  """A fresh copy of the small world to plant a defect in: (cfg, root)."""
  cfg, path = small_world
  root = tmp_path / 'world'
  shutil.copytree(path, root)
  return cfg, root


def part(root, log=layout.CLICKS, day=DAY):
  (path,) = [os.path.join(root, log, day, f)
             for f in os.listdir(os.path.join(root, log, day)) if f.endswith('.gz')]
  return path


def write_records(path, serialized):
  with tf.io.TFRecordWriter(str(path), options='GZIP') as w:
    for record in serialized:
      w.write(record)


def edit_examples(path, edit):
  """Rewrites a file after `edit(list of tf.train.Example)` changed it in place."""
  examples = [tf.train.Example.FromString(r) for r in records.read_records(path)]
  edit(examples)
  write_records(path, [e.SerializeToString() for e in examples])


def edit_columns(path, edit):
  """Rewrites a file after `edit(columns dict)`; returns the columns."""
  cols = records.read_examples(path)
  edit(cols)
  write_records(path, codec.encode(cols))
  return cols


def fails(cfg, root, tmp_path, error=inputs.InputError, after_join=False, **props):
  """Runs the executor, expecting `error`; returns its one-line message.

  Errors found while reading stop before any example file is written; checks of
  the join's totals (`after_join`) come after, and the failed execution's
  output is never published either way.
  """
  out = tmp_path / 'examples'
  with pytest.raises(error) as e:
    helpers.run_example_gen(cfg, root, out, **props)
  message = str(e.value)
  assert '\n' not in message, message
  if not after_join:
    assert not tf.io.gfile.glob(str(out / 'Split-*' / '*.gz')), message
  return message


# --- Logs and partitions ------------------------------------------------------

def test_missing_log(world, tmp_path):
  cfg, root = world
  shutil.rmtree(root / layout.CONVERSIONS)
  msg = fails(cfg, root, tmp_path, window_lib.WindowError)
  assert msg == f'no conversions log at {root / layout.CONVERSIONS}'


def test_missing_partition(world, tmp_path):
  cfg, root = world
  shutil.rmtree(root / layout.CLICKS / DAY)
  msg = fails(cfg, root, tmp_path, window_lib.WindowError)
  assert msg == ('1 clicks partitions of the window [2026-01-04T00:00:00+00:00, '
                 '2026-01-07T00:00:00+00:00) are missing under '
                 f'{root / layout.CLICKS}: 2026-01-05')


def test_partition_without_its_completeness_marker(world, tmp_path):
  cfg, root = world
  os.remove(root / layout.CONVERSIONS / DAY / layout.COMPLETE_MARKER)
  msg = fails(cfg, root, tmp_path, window_lib.WindowError)
  assert msg == (f'{root / layout.CONVERSIONS / DAY}: partition without its _SUCCESS '
                 'marker (its writer adds it after the last file); it may be '
                 'half-written, so it is not read')


# --- Files --------------------------------------------------------------------

def test_truncated_file(world, tmp_path):
  cfg, root = world
  path = part(root)
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  msg = fails(cfg, root, tmp_path)
  assert msg in (f'{path}: truncated gzip TFRecord file (it ends inside a record)',
                 f'{path}: corrupt gzip data (truncated or damaged)')


def test_stray_file_that_is_not_gzip(world, tmp_path):
  cfg, root = world
  stray = root / layout.CLICKS / DAY / 'notes.txt'
  stray.write_text('uploaded by hand\n')
  msg = fails(cfg, root, tmp_path)
  assert msg == f'{stray}: not a gzip file (the logs are gzip TFRecords)'


def test_gzip_file_that_is_not_a_tfrecord(world, tmp_path):
  cfg, root = world
  stray = root / layout.CONVERSIONS / DAY / 'export.csv.gz'
  stray.write_bytes(gzip.compress(b'click_id,conversion_ts\n1,2\n' * 20))
  msg = fails(cfg, root, tmp_path)
  assert msg == f'{stray}: not a TFRecord file (gzip, but no record at its start)'


def test_record_that_is_not_a_tf_example(world, tmp_path):
  cfg, root = world
  path = part(root)
  write_records(path, records.read_records(path)[:5] + [b'\x0a\xff\xff garbage'])
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}: record 5 is not a tf.Example (the clicks log holds '
                 'serialized tf.Examples)')


# --- Columns and values -------------------------------------------------------

def test_missing_column(world, tmp_path):
  cfg, root = world
  path = part(root)
  edit_columns(path, lambda cols: cols.pop('user_engagement'))
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}: column user_engagement is missing (the clicks log '
                 'declares it: clicks.features[6])')


def test_column_missing_from_some_rows(world, tmp_path):
  cfg, root = world
  path = part(root)

  def drop(examples):
    for i in (7, 9):
      del examples[i].features.feature['price']
  edit_examples(path, drop)
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}: column price is missing from 2 of {len(records.read_records(path))} '
                 'rows (first: record 7); every row needs one value '
                 '(clicks.features[10].missing: error)')


def test_wrong_type(world, tmp_path):
  cfg, root = world
  path = part(root)

  def as_float(cols):
    cols['hour'] = cols['hour'].astype(np.float32)
  edit_columns(path, as_float)
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}: column hour holds float values; the spec declares int '
                 '(clicks.features[3].dtype)')


def test_mixed_types_in_one_column(world, tmp_path):
  cfg, root = world
  path = part(root)

  def one_float(examples):
    f = examples[3].features.feature['device']
    f.ClearField('int64_list')
    f.float_list.value.append(1.0)
  edit_examples(path, one_float)
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}: column device is int in record 0 but float in record 3; '
                 'one type per column')


def test_non_finite_value(world, tmp_path):
  cfg, root = world
  path = part(root)

  def nan(cols):
    cols['user_intent'][4] = np.nan
  edit_columns(path, nan)
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}: column user_intent is not finite in 1 rows (first: '
                 'record 4, nan) (clicks.features[13])')


def test_out_of_domain_value(world, tmp_path):
  cfg, root = world
  path = part(root)

  def unknown_browser(cols):
    cols[synthetic.BROWSER][[2, 6]] = 9
  edit_columns(path, unknown_browser)
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}: column browser is outside its domain [0, 4] in 2 rows '
                 '(first: record 2, 9) (clicks.features[4])')


# --- Ids and times --------------------------------------------------------------

def test_duplicate_click_id(world, tmp_path):
  cfg, root = world
  path = part(root)
  other = part(root, day='date=2026-01-06')
  clicks = records.read_examples(path)

  def reuse(cols):
    cols[columns.CLICK_ID][0] = clicks[columns.CLICK_ID][0]
  edit_columns(other, reuse)
  msg = fails(cfg, root, tmp_path)
  assert msg == (f'{path}, {other}: column click_id {clicks[columns.CLICK_ID][0]} is '
                 'duplicated (2 rows); one row per click')


def test_conflicting_duplicate_conversion_id(world, tmp_path):
  cfg, root = world
  path = part(root, layout.CONVERSIONS)
  cols = records.read_examples(path)
  cid = cols[columns.CONVERSION_ID]

  def conflict(c):
    c[columns.CONVERSION_ID][1] = cid[0]  # a second, different conversion, same id
  cols = edit_columns(path, conflict)
  msg = fails(cfg, root, tmp_path)
  assert msg.startswith(f'{path}: column conversion_id {cid[0]} is '
                        'duplicated with conflicting values (click_id ')
  assert msg.endswith('exact copies are dropped, conflicting ones are an error')


def test_conversion_before_its_click(world, tmp_path):
  cfg, root = world
  conv_path = part(root, layout.CONVERSIONS, 'date=2026-01-06')
  convs = records.read_examples(conv_path)
  clicks = records.read_examples(part(root, day='date=2026-01-06'))  # in the window
  i = int(np.flatnonzero(np.isin(convs[columns.CLICK_ID], clicks[columns.CLICK_ID]))[0])
  click_ts = clicks[columns.CLICK_TS][clicks[columns.CLICK_ID] ==
                                      convs[columns.CLICK_ID][i]][0]

  def early(c):
    c[columns.CONVERSION_TS][i] = click_ts - 3600
  edit_columns(conv_path, early)
  msg = fails(cfg, root, tmp_path)
  assert re.fullmatch(
      re.escape(f'{conv_path}: column conversion_ts of conversion_id '
                f'{convs[columns.CONVERSION_ID][i]} (') + r'[0-9T:-]+Z\) is before its '
      + re.escape(f'click (click_id {convs[columns.CLICK_ID][i]} at ') + r'[0-9T:-]+Z'
      + re.escape(' in ') + r'\S+' + re.escape('); a conversion follows its click'),
      msg), msg


# --- Copies and bulk purchases (not errors) -------------------------------------

def counts(examples):
  return {n: examples.get_int_custom_property(n) for n in (
      'conversions_joined', 'conversion_duplicates_dropped', 'clicks_capped',
      'conversions_over_cap_dropped', 'train_examples', 'eval_examples')}


def test_exact_duplicate_conversions_are_dropped_and_counted(small_world, world,
                                                             tmp_path):
  cfg, root = world
  clean = counts(helpers.run_example_gen(cfg, small_world[1], tmp_path / 'clean'))
  path = part(root, layout.CONVERSIONS, 'date=2026-01-06')

  def redeliver(cols):  # the first conversion delivered 5,000 more times
    for name in cols:
      cols[name] = np.concatenate([cols[name], np.repeat(cols[name][:1], 5000)])
  edit_columns(path, redeliver)
  got = counts(helpers.run_example_gen(cfg, root, tmp_path / 'copies'))
  assert got == dict(clean, conversion_duplicates_dropped=5000)
  assert clean['conversion_duplicates_dropped'] == 0


def bulk_purchase(root, n_clicks, per_click):
  """`per_click` distinct conversions for each of the first `n_clicks` eval clicks."""
  clicks = records.read_examples(part(root, day='date=2026-01-06'))
  path = part(root, layout.CONVERSIONS, 'date=2026-01-06')

  def add(cols):
    ids = np.repeat(clicks[columns.CLICK_ID][:n_clicks], per_click)
    ts = np.repeat(clicks[columns.CLICK_TS][:n_clicks], per_click) + 60
    new_ids = 10**9 + np.arange(len(ids), dtype=np.int64)
    for name, extra in ((columns.CONVERSION_ID, new_ids), (columns.CLICK_ID, ids),
                        (columns.CONVERSION_TS, ts)):
      cols[name] = np.concatenate([cols[name], extra.astype(np.int64)])
  edit_columns(path, add)


def test_one_bulk_purchase_is_capped_and_counted_not_fatal(world, tmp_path):
  cfg, root = world
  bulk_purchase(root, n_clicks=1, per_click=500)
  got = counts(helpers.run_example_gen(cfg, root, tmp_path / 'out',
                                       max_conversions_per_click=20,
                                       max_capped_fraction=0.001))
  assert got['clicks_capped'] == 1
  assert got['conversions_over_cap_dropped'] >= 480


def test_many_capped_clicks_fail_the_run(world, tmp_path):
  cfg, root = world
  bulk_purchase(root, n_clicks=5, per_click=30)
  msg = fails(cfg, root, tmp_path, after_join=True, max_conversions_per_click=20,
              max_capped_fraction=0.001)
  assert re.fullmatch(
      re.escape(f'{root / layout.CONVERSIONS}: column click_id: 5 of ') + r'\d+'
      + re.escape(' clicks (') + r'[0-9.]+%' + re.escape(
          ') have more than 20 conversions, above example_gen.max_capped_fraction '
          '(0.100%); one bulk purchase is capped, this many means a broken '
          'conversion log'), msg), msg
