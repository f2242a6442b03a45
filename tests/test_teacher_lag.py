"""The teacher's lag: clicks newer than T - lag never reach its training set.

Not vacuous: the planted train-split clicks straddle the cutoff (so the filter has
something to drop and something to keep), the eval split is shorter than the lag
(E x 24 h < lag, so the filter, not the split, is what excludes them), and a
different lag moves the cutoff.
"""

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from models import teacher_trainer
from schemas import codec
from schemas import columns
from world import synthetic

T = 1_768_000_000 - 1_768_000_000 % 86400  # a UTC midnight
HOUR = 3600


def write_train_split(path, click_ts):
  n = len(click_ts)
  rng = np.random.default_rng(0)
  cols = {
      columns.CLICK_ID: np.arange(n, dtype=np.int64),
      columns.CLICK_TS: np.asarray(click_ts, dtype=np.int64),
      columns.SNAPSHOT_TS: np.full(n, T, dtype=np.int64),
      columns.OBSERVED_FRACTION: np.ones(n, np.float32),
  }
  for name in synthetic.LABELS:
    cols[name] = rng.poisson(0.05, n).astype(np.int64)
  for name in synthetic.EXPOSURES + synthetic.OBSERVED_EXPOSURES:
    cols[name] = np.ones(n, np.float32)
  for name in synthetic.SERVING_FEATURES + synthetic.TEACHER_ONLY_FEATURES:
    col = synthetic.column(name)
    cols[name] = (rng.integers(0, col.buckets or 5, n).astype(np.int64)
                  if col.dtype == 'int' else rng.random(n).astype(np.float32))
  with tf.io.TFRecordWriter(path, options='GZIP') as w:
    for record in codec.encode(cols):
      w.write(record)


def trained_click_times(path, lag_hours):
  cfg = config_lib.load_config(None, [f'window.teacher_lag_hours={lag_hours}',
                                      'window.eval_days=1',
                                      'model.teacher.batch_size=7'])
  ds = teacher_trainer.training_dataset([path], lambda raw: raw, cfg,
                                        shuffle=False, repeat=False)
  return {int(t) for _, targets in ds
          for t in targets[columns.CLICK_TS].numpy()[:, 0]}


@pytest.fixture
def train_split(tmp_path):
  # Train split of a window with E = 1 day: clicks from T - 10 days to T - 1 day,
  # every 20 minutes, each with a unique timestamp (the marker).
  click_ts = np.arange(T - 10 * 24 * HOUR, T - 24 * HOUR, 1200)
  path = str(tmp_path / 'train.tfrecord.gz')
  write_train_split(path, click_ts)
  return path, set(click_ts.tolist())


@pytest.mark.parametrize('lag_hours', [40, 72])
def test_no_click_newer_than_the_cutoff_is_trained_on(train_split, lag_hours):
  path, all_ts = train_split
  cutoff = T - lag_hours * HOUR
  newer = {t for t in all_ts if t > cutoff}
  older = {t for t in all_ts if t <= cutoff}
  assert newer and older and 1 * 24 < lag_hours  # E x 24 h < lag, not vacuous
  trained = trained_click_times(path, lag_hours)
  # Batches drop the remainder (static shapes), so at most batch-1 old clicks miss.
  assert not trained & newer
  assert trained <= older and len(older) - len(trained) < 7
  summary = teacher_trainer.lag_summary([path], lag_hours, synthetic.spec())
  assert summary['cutoff_ts'] == cutoff
  assert summary['examples_trained_on'] == len(older)
  assert summary['latest_click_ts_trained_on'] == max(older)
  assert summary['train_split_examples'] == len(all_ts)


def test_a_different_lag_moves_the_cutoff(train_split):
  path, _ = train_split
  short, long = trained_click_times(path, 40), trained_click_times(path, 72)
  assert long < short
  assert max(short) > T - 72 * HOUR >= max(long)


def test_a_window_shorter_than_the_lag_is_an_error(tmp_path):
  path = str(tmp_path / 'recent.tfrecord.gz')
  write_train_split(path, np.arange(T - 30 * HOUR, T - 24 * HOUR, 600))
  with pytest.raises(ValueError, match='window is shorter than the lag'):
    teacher_trainer.lag_summary([path], 40, synthetic.spec())
