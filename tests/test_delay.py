"""The delay model: exposures are the per-window CDF; samples follow it."""

import numpy as np
import pytest
from scipy import stats

from observation import delay as delay_lib
from schemas import columns
from world import synthetic


@pytest.fixture
def model():
  return delay_lib.DelayModel([8.0, 48.0, 480.0], synthetic.WINDOWS)


def test_exposure_is_zero_before_and_one_after_each_window(model):
  ages = np.array([0.0, 24.0, 47.999, 48.0, 100.0, 168.0, 1000.0, 2160.0, 5000.0])
  e = model.exposures(ages)
  assert e.shape == (len(ages), len(synthetic.WINDOWS))
  assert e[0].tolist() == [0.0, 0.0, 0.0]
  np.testing.assert_allclose(e[3], [1.0, 0.0, 0.0], atol=1e-12)
  np.testing.assert_allclose(e[5], [1.0, 1.0, 0.0], atol=1e-12)
  np.testing.assert_allclose(e[7:], 1.0, atol=1e-12)
  assert ((e >= 0) & (e <= 1)).all()
  assert (np.diff(model.exposures(np.linspace(0, 2500, 500)), axis=0) >= 0).all()


def test_truncated_exponential_cdf_by_hand(model):
  # Window 0_2d at 8 h: (1 - e^-1) / (1 - e^-6).
  e = model.exposures([8.0])[0, 0]
  assert e == pytest.approx((1 - np.exp(-1)) / (1 - np.exp(-6)))


def test_samples_stay_in_their_window_and_follow_the_cdf(model):
  rng = np.random.default_rng(1)
  for i, w in enumerate(synthetic.WINDOWS):
    d = model.sample(rng, np.full(20000, i))
    assert (d >= w.start_hours).all() and (d < w.end_hours).all()
    assert (model.window_of(d) == i).all()
    ks = stats.kstest(d, lambda x: model.exposures(x)[:, i])
    assert ks.pvalue > 1e-3, (w.name, ks)


def test_window_of_outside():
  m = delay_lib.DelayModel([1.0, 1.0, 1.0], synthetic.WINDOWS)
  assert m.window_of([-1.0, 2160.0, 3000.0]).tolist() == [-1, -1, -1]


def test_bad_scales():
  with pytest.raises(ValueError, match='must be > 0'):
    delay_lib.DelayModel([1.0, 0.0, 1.0], synthetic.WINDOWS)
  with pytest.raises(ValueError, match='need 3 scales'):
    delay_lib.DelayModel([1.0], synthetic.WINDOWS)
