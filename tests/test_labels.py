"""Labels as of T on hand-built logs: counts, exposures, maturity, slices, errors."""

import numpy as np
import pytest

from observation import labels
from schemas import columns
from tests import helpers
from world import synthetic

H = 3600
T0 = 1_700_000_000 - (1_700_000_000 % 86400)  # a UTC midnight


@pytest.fixture
def spec():
  return helpers.label_spec()


def clicks(ts, browser=None, tcpa=None, first_party=None):
  n = len(ts)
  return {
      columns.CLICK_ID: np.arange(10, 10 + n),
      columns.CLICK_TS: np.asarray(ts, dtype=np.int64),
      synthetic.BROWSER: np.zeros(n, np.int64) if browser is None else np.asarray(browser),
      synthetic.ADVERTISER_FIRST_PARTY: (np.zeros(n, np.int64) if first_party is None
                                       else np.asarray(first_party)),
      synthetic.TARGET_CPA: np.full(n, 60.0) if tcpa is None else np.asarray(tcpa),
  }


def test_counts_by_window_and_only_reported_by_t(spec):
  c = clicks([T0, T0 + 5 * H])
  # Click 10: delays 1h, 30h (0_2d), 50h (2_7d), 200h (7_90d), 3000h (none).
  conv_id = np.array([10, 10, 10, 10, 10, 11, 99])
  conv_ts = T0 + np.array([1, 30, 50, 200, 3000, 5 + 2, 1]) * H
  t = T0 + 300 * H
  out = helpers.labels_as_of(c, conv_id, conv_ts, t, spec)
  assert out['conversions_0_2d'].tolist() == [2, 1]
  assert out['conversions_2_7d'].tolist() == [1, 0]
  assert out['conversions_7_90d'].tolist() == [1, 0]
  # Earlier T: the 200h conversion is not reported yet, nor the 50h one.
  out = helpers.labels_as_of(c, conv_id, conv_ts, T0 + 40 * H, spec)
  assert out['conversions_0_2d'].tolist() == [2, 1]
  assert out['conversions_2_7d'].tolist() == [0, 0]
  assert out['conversions_7_90d'].tolist() == [0, 0]
  assert (out[columns.SNAPSHOT_TS] == T0 + 40 * H).all()


def test_exposures_follow_the_delay_cdf(spec):
  c = clicks([T0, T0 + 100 * H])
  t = T0 + 120 * H
  out = helpers.labels_as_of(c, [], [], t, spec)
  want = spec.prior_model().exposures([120.0, 20.0])
  for i, name in enumerate(synthetic.EXPOSURES):
    np.testing.assert_allclose(out[name], want[:, i], rtol=1e-6)
  assert out['exposure_0_2d'][0] == 1.0 and out['exposure_7_90d'][1] == 0.0
  assert 0 < out['exposure_2_7d'][0] < 1


def test_observed_exposure_is_f_times_e_without_priors_and_e_in_the_panel(spec):
  c = clicks([T0, T0 + 100 * H, T0 + 119 * H], browser=[2, 3, 2])
  c[synthetic.IN_PANEL] = np.array([0, 0, 1])
  out = helpers.labels_as_of(c, [], [], T0 + 120 * H, spec)
  for e, o in zip(synthetic.EXPOSURES, synthetic.OBSERVED_EXPOSURES):
    np.testing.assert_allclose(out[o][:2], out[e][:2] * np.array([0.3, 0.6]),
                               rtol=1e-6)
    np.testing.assert_allclose(out[o][2], out[e][2], rtol=1e-6)  # panel: all seen


def test_observed_exposure_combines_the_delay_with_segment_priors():
  # Safari without first-party tagging: 0.4 in the first day, 0.1 after; with it
  # 0.5 everywhere (the priors a measurement study gives, per delay segment).
  priors = [(1.0,) * 4, (1.0,) * 4, (0.4, 0.1, 0.1, 0.1), (0.5,) * 4]
  spec = helpers.label_spec(observed_fractions=(1.0, 0.3), priors=tuple(priors))
  ages = np.array([10.0, 30.0, 100.0, 3000.0])
  c = clicks(T0 + 4000 * H - (ages * H).astype(np.int64), browser=[1] * 4)
  out = helpers.labels_as_of(c, [], [], T0 + 4000 * H, spec)
  cdf = lambda x: spec.prior_model().exposures(np.atleast_1d(x))[:, 0]  # window 0_2d
  want_0 = [0.4 * cdf(10.0)[0],
            0.4 * cdf(24.0)[0] + 0.1 * (cdf(30.0)[0] - cdf(24.0)[0]),
            0.4 * cdf(24.0)[0] + 0.1 * (1 - cdf(24.0)[0]),
            0.4 * cdf(24.0)[0] + 0.1 * (1 - cdf(24.0)[0])]
  np.testing.assert_allclose(out['observed_exposure_0_2d'], want_0, rtol=1e-5)
  # Later windows lie wholly after the first day: 0.1 of their exposure.
  for e, o in zip(synthetic.EXPOSURES[1:], synthetic.OBSERVED_EXPOSURES[1:]):
    np.testing.assert_allclose(out[o], 0.1 * out[e], rtol=1e-5, atol=1e-7)
  # First-party: flat 0.5.
  c[synthetic.ADVERTISER_FIRST_PARTY] = np.ones(4, np.int64)
  out = helpers.labels_as_of(c, [], [], T0 + 4000 * H, spec)
  for e, o in zip(synthetic.EXPOSURES, synthetic.OBSERVED_EXPOSURES):
    np.testing.assert_allclose(out[o], 0.5 * out[e], rtol=1e-5, atol=1e-7)
  # The spec travels as the ExampleGen's parameter.
  again = labels.LabelSpec.from_json(spec.to_json())
  np.testing.assert_array_equal(again.segment_priors(), spec.segment_priors())


def test_labels_grow_with_t_and_equal_full_counts_once_mature(spec):
  rng = np.random.default_rng(0)
  c = clicks(T0 + np.sort(rng.integers(0, 86400, 50)))
  n_conv = 400
  conv_id = rng.integers(10, 60, n_conv)
  delays = spec.prior_model().sample(rng, rng.integers(0, 3, n_conv))
  conv_ts = c[columns.CLICK_TS][conv_id - 10] + (delays * H).astype(np.int64)
  previous = None
  for days in [1, 2, 5, 10, 30, 60, 91, 120]:
    out = helpers.labels_as_of(c, conv_id, conv_ts, T0 + days * 86400, spec)
    counts = np.stack([out[n] for n in synthetic.LABELS], 1)
    if previous is not None:
      assert (counts >= previous).all()
    previous = counts
  window = spec.prior_model().window_of((conv_ts - c[columns.CLICK_TS][conv_id - 10]) / H)
  full = np.zeros((50, 3), np.int64)
  np.add.at(full, (conv_id - 10, window), 1)
  np.testing.assert_array_equal(previous, full)
  assert previous.sum() == n_conv
  assert (np.stack([out[n] for n in synthetic.EXPOSURES]) == 1.0).all()


def test_slices_and_observed_fraction(spec):
  c = clicks([T0] * 6, browser=[0, 1, 2, 3, 4, 7],
             tcpa=[10.0, 50.0, 50.01, 250.0, 250.5, float('nan')])
  out = helpers.labels_as_of(c, [], [], T0 + H, spec)
  assert out[columns.TCPA_BUCKET].tolist() == [
      'tcpa_le_50', 'tcpa_le_50', 'tcpa_50_100', 'tcpa_100_250', 'tcpa_gt_250', '']
  np.testing.assert_allclose(out[columns.OBSERVED_FRACTION][:5],
                             [1.0, 0.9, 0.3, 0.6, 0.2], rtol=1e-6)
  # An unknown browser is not guessed: NaN and an empty slice, which the
  # schema rejects, so the DataGate names it.
  assert np.isnan(out[columns.OBSERVED_FRACTION][5])
  assert out[columns.BROWSER_OBSERVABILITY].tolist() == [
      'full', 'partial', 'low', 'partial', 'low', '']


def test_structural_errors(spec):
  with pytest.raises(ValueError, match='at or after T'):
    helpers.labels_as_of(clicks([T0, T0 + 10]), [], [], T0 + 10, spec)
  c = clicks([T0, T0 + 1])
  c[columns.CLICK_ID] = np.array([5, 5])
  with pytest.raises(ValueError, match='duplicate click_id 5'):
    helpers.labels_as_of(c, [], [], T0 + H, spec)
  with pytest.raises(ValueError, match=r'before its click \(click_id 10\)'):
    helpers.labels_as_of(clicks([T0]), [10], [T0 - 1], T0 + H, spec)


def test_empty_window(spec):
  out = helpers.labels_as_of(clicks([]), [10], [T0], T0 + H, spec)
  assert all(len(v) == 0 for v in out.values())


def test_join_window_keeps_log_columns(spec):
  c = clicks([T0])
  c['price'] = np.array([3.5], np.float32)
  c[columns.TRUE_CONVERSIONS] = np.array([2])
  c['unrelated'] = np.array([1])
  names = synthetic.spec().example_columns()
  out = labels.join_window(c, [10], [T0 + H], T0 + 2 * H, spec,
                           labels.prior_delay(spec), [n.name for n in names])
  assert out['price'].tolist() == [3.5]
  assert out[columns.TRUE_CONVERSIONS].tolist() == [2]
  assert out['conversions_0_2d'].tolist() == [1]
  assert 'unrelated' not in out
  assert list(out) == [n.name for n in names if n.name in out]
