"""examples/criteo_conversion_logs: the converter, its spec and config, and the
ExampleGen on the converted CSV logs.

The real data.txt (15.9M lines) is not available here: the tests write 300
lines in exactly its format (tab-separated, no header: click seconds, conversion
seconds or empty, 8 integers, 9 hex-like hashed categoricals, any field empty)
with a fixed seed, plus hand-made lines whose outcome is checked literally.
"""

import csv
import datetime
import gzip
import math
import os
import random

import numpy as np
import pytest
from tfx.types import artifact_utils

import config as config_lib
from components.example_gen import executor
from components.example_gen import inputs
from components.example_gen import sources
from examples.criteo_conversion_logs import convert
from schemas import codec
from schemas import columns
from schemas import records
from tests import helpers

CONFIG = 'examples/criteo_conversion_logs/config.yaml'
START = datetime.date(2026, 1, 1)
EPOCH = int(datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
DAY = 86400
DAYS = 10  # of clicks: 2026-01-01..10
N = 300
# T: the midnight after the last click day (a later T would need click
# partitions the data does not have).
T = EPOCH + DAYS * DAY
T_ISO = '2026-01-11T00:00:00+00:00'
WINDOWS = ('0_1d', '1_7d', '7_30d')
INTS = tuple(f'int{i}' for i in range(1, 9))
CATS = tuple(f'cat{i}' for i in range(1, 10))
EMPTY = [''] * 8

# Hand-made lines: line number -> (conversion delay in seconds or None, the 8
# integer fields, the 9 categorical fields). Click times stay the seeded ones.
HAND = {
    5: (600, EMPTY, ['DEADBEEF', '', '0A1B2C3D', '', '', '', '', '', '']),
    20: (8 * DAY, ['3', '0', '', '12', '-1', '7', '', '1000000'],
         ['', 'FFFFFFFF', '', '', '', '', '', '', '7E57C0DE']),
    40: (3 * DAY, ['1'] * 8, ['CAFEF00D'] * 9),
    100: (25 * DAY, ['2'] * 8, [''] * 9),  # converts after T
    150: (None, ['4'] * 8, ['ABCDEF01'] * 9),  # never converts
}


def criteo_lines(seed=7, n=N):
  """`n` lines of data.txt, time-sorted by click, as [fields] lists, and the
  click and conversion seconds of each (None: no conversion)."""
  r = random.Random(seed)
  clicks = sorted(r.randrange(DAYS * DAY) for _ in range(n))
  vocab = [[f'{r.getrandbits(32):08X}' for _ in range(20)] for _ in CATS]
  lines, conv = [], []
  for i, click in enumerate(clicks, 1):
    if i in HAND:
      delay, ints, cats = HAND[i]
    else:
      # Delays log-uniform from a minute to 12 days; 40% of clicks convert.
      delay = (int(math.exp(r.uniform(math.log(60), math.log(12 * DAY))))
               if r.random() < 0.4 else None)
      ints = ['' if r.random() < 0.2 else str(int(r.expovariate(1 / 50)))
              for _ in INTS]
      cats = ['' if r.random() < 0.15 else r.choice(v) for v in vocab]
    c = None if delay is None else click + delay
    conv.append(c)
    lines.append([str(click), '' if c is None else str(c)] + ints + cats)
  return lines, clicks, conv


def write_data(path, lines):
  opener = gzip.open if str(path).endswith('.gz') else open
  with opener(path, 'wt') as f:
    for fields in lines:
      f.write('\t'.join(fields) + '\n')


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.reader(f))


def partitions(root, log):
  return sorted(os.listdir(os.path.join(root, log)))


def day_name(ts):
  return 'date=' + datetime.datetime.fromtimestamp(
      ts, datetime.timezone.utc).date().isoformat()


def run_example_gen(cfg, root, out):
  """The ExampleGen executor on the converted logs, window [T - 10 d, T)."""
  return helpers.run_example_gen(cfg, root, out, window_days=DAYS,
                                 **{executor.SNAPSHOT_TIME_KEY: T_ISO})


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """data.txt written and converted: (lines, clicks, conversions, root)."""
  tmp = tmp_path_factory.mktemp('criteo')
  lines, clicks, conv = criteo_lines()
  write_data(tmp / 'data.txt', lines)
  root = tmp / 'data'
  convert.convert(str(tmp / 'data.txt'), str(root), START.isoformat())
  return lines, clicks, conv, root


@pytest.fixture(scope='module')
def examples(converted, tmp_path_factory):
  """The ExampleGen executor run on the converted logs: every column of the
  train and eval splits together, in click_id order."""
  *_, root = converted
  cfg = config_lib.load_config(CONFIG, [f'paths.data_root={root}'])
  out = tmp_path_factory.mktemp('eg') / 'examples'
  artifact = run_example_gen(cfg, root, out)
  splits = {s: records.read_examples(artifact_utils.get_split_uri([artifact], s))
            for s in ('train', 'eval')}
  merged = {k: np.concatenate([splits['train'][k], splits['eval'][k]])
            for k in splits['train']}
  order = np.argsort(merged[columns.CLICK_ID], kind='stable')
  return cfg, artifact, {k: v[order] for k, v in merged.items()}, splits


# --- The converter ------------------------------------------------------------

def test_converter_writes_complete_day_partitions(converted):
  lines, clicks, conv, root = converted
  click_days = [f'date={START + datetime.timedelta(days=d)}' for d in range(DAYS)]
  assert partitions(root, 'clicks') == click_days
  last = max(c for c in conv if c is not None)
  n_conv_days = last // DAY + 1
  assert n_conv_days > DAYS  # the 25-day delay reaches past the clicks
  assert partitions(root, 'conversions') == [
      f'date={START + datetime.timedelta(days=d)}' for d in range(n_conv_days)]
  assert not os.path.exists(root / '.convert-tmp')
  empty = 0
  for log in ('clicks', 'conversions'):
    for name in partitions(root, log):
      d = root / log / name
      assert sorted(os.listdir(d)) == ['_SUCCESS', 'part-00000.csv']
      assert os.path.getmtime(d / '_SUCCESS') >= os.path.getmtime(d / 'part-00000.csv')
      rows = read_csv(d / 'part-00000.csv')
      assert tuple(rows[0]) == convert.HEADERS[log]
      empty += len(rows) == 1
  assert empty >= 1  # days between the last random conversion and the 25-day one

  # Clicks: one row per line, id = line number, time = start + seconds, fields
  # as text (empty stays empty).
  rows = [r for name in partitions(root, 'clicks')
          for r in read_csv(root / 'clicks' / name / 'part-00000.csv')[1:]]
  assert len(rows) == N
  for i, (row, fields) in enumerate(zip(rows, lines), 1):
    assert row == [str(i), str(EPOCH + clicks[i - 1])] + fields[2:]
  for name in partitions(root, 'clicks'):
    for row in read_csv(root / 'clicks' / name / 'part-00000.csv')[1:]:
      assert day_name(int(row[1])) == name

  # Conversions: by conversion day, id = click id = line number.
  got = {}
  for name in partitions(root, 'conversions'):
    for cid, click_id, ts in read_csv(root / 'conversions' / name /
                                      'part-00000.csv')[1:]:
      assert cid == click_id and day_name(int(ts)) == name
      got[int(click_id)] = int(ts)
  assert got == {i: EPOCH + c for i, c in enumerate(conv, 1) if c is not None}
  assert 100 < len(got) < 150 and 150 not in got and got[5] == EPOCH + clicks[4] + 600


def test_converter_command_reads_gzip_and_prints_one_line(tmp_path, capsys):
  lines, _, conv = criteo_lines(seed=3, n=40)
  write_data(tmp_path / 'data.txt.gz', lines)
  out = tmp_path / 'out'
  assert convert.main(['--input', str(tmp_path / 'data.txt.gz'), '--out', str(out),
                       '--start-date', '2026-01-01']) == 0
  printed = capsys.readouterr().out.splitlines()
  n_conv = sum(c is not None for c in conv)
  assert len(printed) == 1 and printed[0].startswith(
      f'converted 40 clicks (2026-01-01..2026-01-10, 10 days) and {n_conv} '
      'conversions'), printed
  # Logs already there: refused without --force, replaced with it.
  with pytest.raises(SystemExit):
    convert.main(['--input', str(tmp_path / 'data.txt.gz'), '--out', str(out)])
  assert 'already exist' in capsys.readouterr().err
  assert convert.main(['--input', str(tmp_path / 'data.txt.gz'), '--out', str(out),
                       '--force']) == 0


def test_converter_names_the_malformed_line(tmp_path):
  lines, *_ = criteo_lines(n=10)
  bad = [list(l) for l in lines]
  bad[6][0] = '12.5'
  write_data(tmp_path / 'data.txt', bad)
  with pytest.raises(convert.ConvertError) as e:
    convert.convert(str(tmp_path / 'data.txt'), str(tmp_path / 'out'))
  assert str(e.value) == (f'{tmp_path / "data.txt"}: line 7: the click time '
                          "'12.5' is not whole seconds")
  bad = [list(l) for l in lines]
  bad[2] = bad[2][:-1]
  write_data(tmp_path / 'data.txt', bad)
  with pytest.raises(convert.ConvertError, match='line 3: 18 tab-separated fields'):
    convert.convert(str(tmp_path / 'data.txt'), str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out' / 'clicks')


# --- The spec and the config --------------------------------------------------

def test_config_loads_with_what_the_dataset_lacks_turned_off():
  cfg = config_lib.load_config(CONFIG)
  d = cfg.dataset
  assert cfg.dataset_file == 'examples/criteo_conversion_logs/dataset.yaml'
  assert cfg.paths.data_root == convert.DEFAULT_OUT
  assert d.source.format == 'csv' and not d.truth
  assert not (d.segment or d.tcpa or d.panel or d.first_party)
  assert d.serving_names() == INTS + CATS and not d.features('teacher_only')
  assert d.hashed_names() == CATS
  assert d.window_names() == WINDOWS and d.windows[-1].end_hours == 30 * 24
  assert cfg.eval.label_mode == 'observed_observable'
  assert cfg.teacher_gate.mode == 'observed'
  assert cfg.fallback.target == 'candidate'
  assert not cfg.model.teacher_panel_calibration
  assert cfg.observability.priors_source == 'config'
  assert (cfg.window.days, cfg.window.eval_days) == (28, 1)


# --- The ExampleGen on the converted logs -------------------------------------

def test_every_click_of_the_window_once_with_the_specs_columns(converted, examples):
  _, clicks, _, _ = converted
  cfg, artifact, got, splits = examples
  np.testing.assert_array_equal(got[columns.CLICK_ID], np.arange(1, N + 1))
  np.testing.assert_array_equal(got[columns.CLICK_TS], EPOCH + np.asarray(clicks))
  assert (got[columns.SNAPSHOT_TS] == T).all()
  assert (splits['eval'][columns.CLICK_TS] >= T - DAY).all()
  assert (splits['train'][columns.CLICK_TS] < T - DAY).all()
  assert artifact.get_int_custom_property('eval_examples') == len(
      splits['eval'][columns.CLICK_ID]) > 0
  pipeline = (set(columns.labels(WINDOWS)) | set(columns.exposures(WINDOWS)) |
              set(columns.observed_exposures(WINDOWS)) |
              set(columns.prior_observability(WINDOWS)) |
              {columns.OBSERVED_FRACTION, columns.MATURITY})
  log = {columns.CLICK_ID, columns.CLICK_TS, columns.SNAPSHOT_TS} | set(INTS + CATS)
  for split in splits.values():
    assert set(split) == log | pipeline
  # And the same names from the spec (its teacher columns come later).
  assert set(got) == {c.name for c in cfg.dataset.example_columns()
                      if c.role != columns.Role.TEACHER}


def test_features_filled_and_hashed_as_the_spec_says(converted, examples):
  lines, *_ = converted
  _, _, got, _ = examples
  # By hand: a missing int is the fill (0), a given one is itself (negative
  # too: no min is declared); a string is its documented hash, a missing one
  # the hash of ''.
  row5, row20 = 4, 19
  assert [int(got[c][row5]) for c in INTS] == [0] * 8
  assert [int(got[c][row20]) for c in INTS] == [3, 0, 0, 12, -1, 7, 0, 1000000]
  h = lambda s: int(codec.hash_strings([s])[0])
  assert int(got['cat1'][row5]) == h('DEADBEEF')
  assert int(got['cat3'][row5]) == h('0A1B2C3D')
  assert int(got['cat2'][row5]) == int(got['cat9'][row5]) == h('')
  assert int(got['cat2'][row20]) == h('FFFFFFFF')
  assert int(got['cat9'][row20]) == h('7E57C0DE')
  assert h('') != h('DEADBEEF')
  assert {got[c].dtype for c in INTS + CATS} == {np.dtype(np.int64)}
  # Every row: the text the converter copied, through the same rules.
  for j, c in enumerate(INTS):
    want = [int(f[2 + j]) if f[2 + j] else 0 for f in lines]
    np.testing.assert_array_equal(got[c], want, c)
  for j, c in enumerate(CATS):
    np.testing.assert_array_equal(got[c], codec.hash_strings(
        [f[10 + j] for f in lines]), c)


def test_conversions_land_in_their_delay_windows(converted, examples):
  _, clicks, conv, _ = converted
  _, _, got, _ = examples
  labels = {w: got[f'conversions_{w}'] for w in WINDOWS}
  by_hand = {5: '0_1d', 40: '1_7d', 20: '7_30d', 100: None, 150: None}
  assert clicks[19] + 8 * DAY < T - EPOCH < clicks[99] + 25 * DAY  # the premises
  for line, window in by_hand.items():
    assert [int(labels[w][line - 1]) for w in WINDOWS] == [
        int(w == window) for w in WINDOWS], line
  # Every click: its conversion counts in the window of its delay if reported
  # by T, and nowhere otherwise.
  bounds = {'0_1d': (0, DAY), '1_7d': (DAY, 7 * DAY), '7_30d': (7 * DAY, 30 * DAY)}
  for w, (lo, hi) in bounds.items():
    want = [int(c is not None and EPOCH + c <= T and lo <= c - k < hi)
            for k, c in zip(clicks, conv)]
    np.testing.assert_array_equal(labels[w], want, w)
  assert all(labels[w].sum() > 0 for w in WINDOWS)


def test_a_malformed_int_fails_naming_file_column_and_spec_key(tmp_path):
  lines, clicks, _ = criteo_lines(n=60)
  bad = [list(l) for l in lines]
  bad[16][2 + 2] = 'abc'  # line 17, int3
  write_data(tmp_path / 'data.txt', bad)
  root = tmp_path / 'data'
  convert.convert(str(tmp_path / 'data.txt'), str(root))
  path = os.path.join(root, 'clicks', day_name(EPOCH + clicks[16]), 'part-00000.csv')
  record = [r[0] for r in read_csv(path)[1:]].index('17')
  cfg = config_lib.load_config(CONFIG, [f'paths.data_root={root}'])
  with pytest.raises(inputs.InputError) as e:
    run_example_gen(cfg, root, tmp_path / 'examples')
  assert str(e.value) == (f"{path}: column int3 holds 'abc' in record {record}; "
                          'the spec declares int (clicks.features[2].dtype)')


def test_pipeline_csv_reader_reads_a_gfile(converted):
  *_, root = converted
  path = os.path.join(root, 'conversions', 'date=2026-01-01', 'part-00000.csv')
  names = list(convert.HEADERS['conversions'])
  tables = [t for _, t, _ in sources.read_csv(path, names, ',')]
  assert sum(t.num_rows for t in tables) == len(read_csv(path)) - 1
