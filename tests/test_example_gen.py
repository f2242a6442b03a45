"""ConversionLogExampleGen executor on a small generated world."""

import datetime
import os
import shutil

import numpy as np
import pytest
from tfx.types import artifact_utils

from components import artifacts
from components.example_gen import executor
from components.example_gen import window as window_lib
from observation import delay_fit
from observation import labels
from observation import snapshot
from schemas import columns
from schemas import records
from tests import helpers
from tests.helpers import make_world


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  return make_world(tmp_path_factory.mktemp('eg_world'),
                    ['world.num_clicks=8000', 'world.days=12', 'world.seed=5'])


def run(cfg, data_root, out, snapshot_time='', **extra):
  return helpers.run_example_gen(cfg, data_root, out, window_days=7,
                                 **{executor.SNAPSHOT_TIME_KEY: snapshot_time, **extra})


def delay_of(out):
  """The delay model the executor at `out` recorded."""
  with open(os.path.join(f'{out}-delay', executor.DELAY_FIT_FILE)) as f:
    return delay_fit.DelayFit.from_json(f.read())


def test_joined_examples_equal_the_as_of_t_module(world, tmp_path):
  cfg, path = world
  examples = run(cfg, path, tmp_path / 'out')
  t = snapshot.midnight(datetime.date(2026, 1, 13))  # the day after the last one
  assert examples.get_string_custom_property(artifacts.SNAPSHOT_TIME) == t.isoformat()
  assert examples.get_int_custom_property(artifacts.SNAPSHOT_TS) == snapshot.to_ts(t)
  assert artifact_utils.decode_split_names(examples.split_names) == ['train', 'eval']

  got = {s: records.read_examples(artifact_utils.get_split_uri([examples], s))
         for s in ('train', 'eval')}
  assert examples.get_int_custom_property('train_examples') == len(
      got['train'][columns.CLICK_ID])
  eval_start = snapshot.to_ts(t) - 86400
  assert (got['eval'][columns.CLICK_TS] >= eval_start).all()
  assert (got['train'][columns.CLICK_TS] < eval_start).all()
  assert (got['train'][columns.CLICK_TS] >= snapshot.to_ts(t) - 7 * 86400).all()

  # The same join computed in memory from the logs.
  clicks = records.read_examples(os.path.join(path, 'clicks'))
  convs = records.read_examples(os.path.join(path, 'conversions'))
  keep = clicks[columns.CLICK_TS] >= snapshot.to_ts(t) - 7 * 86400
  names = [c.name for c in cfg.dataset.example_columns()
           if c.role != columns.Role.TEACHER]
  fit = delay_of(tmp_path / 'out')
  assert fit.source == 'fitted' and fit.conversions.sum() > 100
  want = labels.join_window({k: v[keep] for k, v in clicks.items()},
                            convs[columns.CLICK_ID], convs[columns.CONVERSION_TS],
                            snapshot.to_ts(t), cfg.label_spec(), fit, names)
  merged = {k: np.concatenate([got['train'][k], got['eval'][k]]) for k in want}
  order = np.argsort(merged[columns.CLICK_ID])
  want_order = np.argsort(want[columns.CLICK_ID])
  assert set(got['train']) == set(names)
  for name in want:
    np.testing.assert_array_equal(merged[name][order], want[name][want_order], name)
  assert merged['conversions_0_2d'].sum() > 0


def test_tune_split_is_a_hashed_share_of_the_train_window(world, tmp_path):
  cfg, path = world
  plain = run(cfg, path, tmp_path / 'plain')
  tuned = run(cfg, path, tmp_path / 'tuned', **{executor.TUNE_FRACTION_KEY: 0.2})
  assert artifact_utils.decode_split_names(tuned.split_names) == [
      'train', 'eval', 'tune']
  read = lambda a, s: records.read_examples(artifact_utils.get_split_uri([a], s))
  before, ev = read(plain, 'train'), read(plain, 'eval')
  train, tune = read(tuned, 'train'), read(tuned, 'tune')
  # The eval split is untouched; the train window's clicks are split by the hash.
  np.testing.assert_array_equal(np.sort(read(tuned, 'eval')[columns.CLICK_ID]),
                                np.sort(ev[columns.CLICK_ID]))
  assert window_lib.tune_mask(tune[columns.CLICK_ID], 0.2).all()
  assert not window_lib.tune_mask(train[columns.CLICK_ID], 0.2).any()
  assert sorted(np.concatenate([train[columns.CLICK_ID], tune[columns.CLICK_ID]])) \
      == sorted(before[columns.CLICK_ID])
  assert 0.1 < len(tune[columns.CLICK_ID]) / len(before[columns.CLICK_ID]) < 0.3
  assert tuned.get_int_custom_property('tune_examples') == len(tune[columns.CLICK_ID])


def test_explicit_t_and_missing_partitions(world, tmp_path):
  cfg, path = world
  examples = run(cfg, path, tmp_path / 'a', snapshot_time='2026-01-10T00:00:00Z')
  assert examples.get_int_custom_property(artifacts.SNAPSHOT_TS) == snapshot.to_ts(
      snapshot.parse_utc('2026-01-10T00:00:00Z'))
  broken = tmp_path / 'broken'
  shutil.copytree(path, broken)
  shutil.rmtree(broken / 'clicks' / 'date=2026-01-08')
  with pytest.raises(window_lib.WindowError,
                     match='1 clicks partitions .* missing .*2026-01-08'):
    run(cfg, str(broken), tmp_path / 'b', snapshot_time='2026-01-10T00:00:00Z')


def test_empty_window_is_an_error(world, tmp_path):
  cfg, path = world
  empty = tmp_path / 'empty'
  shutil.copytree(path, empty)
  for part in (empty / 'clicks' / 'date=2026-01-12').iterdir():
    part.write_bytes(b'')  # an empty (truncated) day: no eval clicks
  with pytest.raises(window_lib.WindowError, match=r"no clicks in split\(s\) \['eval'\]"):
    run(cfg, str(empty), tmp_path / 'c')
