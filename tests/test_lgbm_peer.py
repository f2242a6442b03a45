"""The benchmark's LightGBM peer on a small synthetic world with a known rate."""

import numpy as np
import pytest

from bench import lgbm_peer
from schemas import columns
from world import synthetic

DAY = 86400
DAYS = 20
# Share of the total rate per window, and the exposure's time scale in hours.
SHARES = (0.5, 0.3, 0.2)
SCALES = (12.0, 36.0, 200.0)
# The serving features the true rate depends on, and which browsers are half seen.
CATEGORY = 'product_category'
NUMERIC = 'user_engagement'
HALF_SEEN = (3, 4)


def _features(rng, n):
  """Every serving feature; only CATEGORY and NUMERIC move the rate."""
  out = {}
  for name in synthetic.SERVING_FEATURES:
    col = synthetic.column(name)
    if col.kind == columns.Kind.CATEGORICAL:
      out[name] = rng.integers(0, min(col.buckets, 8), n).astype(np.int64)
    elif col.dtype == 'int':
      out[name] = rng.poisson(3.0, n).astype(np.int64)
    else:
      out[name] = rng.standard_normal(n)
  return out


def _total_rate(data, effect):
  return 0.8 * np.exp(effect[data[CATEGORY]] + 0.6 * data[NUMERIC])


def _world(seed=0, n_train=6000, n_score=3000):
  """Train rows with reported counts as of T = the end; score rows with truth."""
  rng = np.random.default_rng(seed)
  effect = np.linspace(-1.0, 1.0, 8)
  train = _features(rng, n_train)
  train[columns.CLICK_TS] = np.sort(rng.integers(0, DAYS * DAY, n_train))
  age_h = (DAYS * DAY - train[columns.CLICK_TS]) / 3600.0
  # f_b follows the browser (a serving feature), as in the world: a peer without
  # the offset would learn half the rate for these browsers.
  f_b = np.where(np.isin(train[synthetic.BROWSER], HALF_SEEN), 0.5, 1.0)
  train[columns.OBSERVED_FRACTION] = f_b
  rate = _total_rate(train, effect)
  for w, label, exposure, observed, share, scale in zip(
      synthetic.WINDOWS, synthetic.LABELS, synthetic.EXPOSURES,
      synthetic.OBSERVED_EXPOSURES, SHARES, SCALES):
    # 0 before the window opens: the newest clicks have no 2_7d or 7_90d exposure.
    e = np.where(age_h > w.start_hours,
                 1.0 - np.exp(-(age_h - w.start_hours) / scale), 0.0)
    train[exposure] = e
    train[observed] = f_b * e
    train[label] = rng.poisson(f_b * e * share * rate).astype(np.int64)
  score = _features(rng, n_score)
  return train, score, _total_rate(score, effect)


def _deviance(mu, pred):
  """Mean Poisson deviance of predictions `pred` from true means `mu`."""
  return float(np.mean(2.0 * (mu * np.log(mu / pred) - mu + pred)))


@pytest.fixture(scope='module')
def world():
  return _world()


@pytest.fixture(scope='module')
def fitted(world):
  train, score, _ = world
  return lgbm_peer.fit_predict(train, score, seed=0)


def test_recovers_true_rate_better_than_constant(world, fitted):
  _, _, true_rate = world
  pred, info = fitted
  constant = np.full_like(true_rate, true_rate.mean())  # the best constant
  assert _deviance(true_rate, pred) < 0.5 * _deviance(true_rate, constant)
  assert set(info['best_iteration']) == set(synthetic.WINDOW_NAMES)
  assert info['params']['objective'] == 'poisson'


def test_offset_corrects_the_observed_fraction(world, fitted):
  _, score, true_rate = world
  pred, _ = fitted
  half = np.isin(score[synthetic.BROWSER], HALF_SEEN)
  assert half.mean() == pytest.approx(0.4, abs=0.05)
  # Calibration (mean prediction over mean true rate, as the benchmark reports
  # it): without the f_b offset these rows would come out at about half.
  for rows in (half, ~half):
    assert pred[rows].mean() / true_rate[rows].mean() == pytest.approx(1.0, abs=0.15)


def test_zero_offset_rows_are_dropped(world, fitted):
  train, score, _ = world
  pred, info = fitted
  assert np.all(np.isfinite(pred)) and np.all(pred > 0)
  for name, observed in zip(synthetic.WINDOW_NAMES, synthetic.OBSERVED_EXPOSURES):
    informative = int(np.sum(train[observed] > 0))
    assert 0 < info['valid_rows'][name] < informative
    assert info['train_rows'][name] + info['valid_rows'][name] == informative
  assert info['train_rows']['7_90d'] < len(train[columns.CLICK_TS])
  # Counts on zero-offset rows are never read.
  planted = dict(train)
  for label, exposure in zip(synthetic.LABELS, synthetic.EXPOSURES):
    planted[label] = np.where(train[exposure] > 0, train[label], 7)
  np.testing.assert_array_equal(lgbm_peer.fit_predict(planted, score)[0], pred)


def test_same_seed_same_predictions(world, fitted):
  train, score, _ = world
  pred, info = fitted
  again, again_info = lgbm_peer.fit_predict(train, score, seed=0)
  np.testing.assert_array_equal(again, pred)
  assert again_info['best_iteration'] == info['best_iteration']
