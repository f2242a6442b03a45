"""The reference Poisson NLL against hand-computed values and scipy."""

import math

import numpy as np
import pytest
from scipy import special
from scipy import stats

from models import nll


def test_hand_values():
  # y=0, mu=1: 1 - 0 + log 0! = 1;  y=2, mu=1: 1 - 2 log 1 + log 2!;  y=3, mu=2.
  got = nll.poisson_nll_per_example([0, 2, 3], [1.0, 1.0, 2.0])
  want = [1.0, 1.0 + math.log(2), 2 - 3 * math.log(2) + math.log(6)]
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_equals_scipy_logpmf_and_handles_zero_mean():
  rng = np.random.default_rng(0)
  mu = rng.gamma(0.5, 0.2, 1000)
  y = rng.poisson(mu)
  np.testing.assert_allclose(nll.poisson_nll_per_example(y, mu),
                             -stats.poisson.logpmf(y, mu), rtol=1e-9, atol=1e-12)
  assert nll.poisson_nll_per_example([0], [0.0])[0] == 0.0
  assert np.isinf(nll.poisson_nll_per_example([1], [0.0])[0])


def test_weights_and_non_integer_targets():
  assert nll.poisson_nll([0, 2], [1.0, 1.0], weights=[1.0, 0.0]) == 1.0
  # Observed + modeled targets are not integers: log Gamma(y + 1) generalises y!.
  got = nll.poisson_nll_per_example([0.5], [1.0])[0]
  assert got == pytest.approx(1.0 + math.lgamma(1.5))


@pytest.mark.parametrize('y, mu, message', [
    ([-1], [1.0], 'labels has negative'),
    ([1], [float('nan')], 'predictions has NaN'),
    ([1, 2], [1.0], 'differ in shape'),
])
def test_bad_input(y, mu, message):
  with pytest.raises(ValueError, match=message):
    nll.poisson_nll(y, mu)


def test_relative_change():
  assert nll.relative_change(0.99, 1.0) == pytest.approx(-0.01)


def test_excess_risk_is_zero_at_the_true_rate_and_non_negative():
  rng = np.random.default_rng(1)
  lam = np.concatenate([[0.0], rng.gamma(0.5, 0.2, 10_000)])
  assert np.all(nll.excess_risk_per_example(lam, lam) == 0.0)
  # Includes mu within 1e-9 of lambda, where the direct formula cancels to noise.
  mu = lam * np.exp(rng.normal(0, 1, lam.size) * rng.choice([1e-9, 1e-3, 1.0], lam.size))
  per = nll.excess_risk_per_example(lam, mu)
  assert per.dtype == np.float64 and np.all(per >= 0.0)
  # Away from lambda, scipy's direct kl_div (the same formula) is accurate.
  far = np.abs(mu / np.maximum(lam, 1e-300) - 1) > 0.1
  np.testing.assert_allclose(per[far], special.kl_div(lam, mu)[far], rtol=1e-9)
  # Second order near lambda: (mu - lambda)^2 / (2 lambda), to the precision
  # float64 represents mu / lambda - 1 at all.
  near = np.abs(mu / np.maximum(lam, 1e-300) - 1) < 1e-6
  np.testing.assert_allclose(per[near], (mu - lam)[near] ** 2 / (2 * lam[near]),
                             rtol=1e-3)
  # lambda == 0 costs mu; mu == 0 < lambda is infinite, as the NLL's expectation.
  np.testing.assert_array_equal(nll.excess_risk_per_example([0.0, 0.0], [0.0, 2.5]),
                                [0.0, 2.5])
  assert np.isinf(nll.excess_risk_per_example([1.0], [0.0])[0])
  # mu / lambda overflows, or rounds d to -1: the risk is still finite.
  np.testing.assert_allclose(nll.excess_risk_per_example([1e-310, 1.0], [1.0, 1e-300]),
                             [1.0, 300 * math.log(10) - 1], rtol=1e-12)
  assert nll.excess_risk([1.0, 0.0], [math.e, 1.0]) == pytest.approx(
      ((1 * math.log(1 / math.e) - 1 + math.e) + 1.0) / 2)


@pytest.mark.parametrize('lam, mu', [(0.02, 0.05), (0.3, 0.2), (2.0, 3.5), (1.0, 0.1),
                                     (0.0, 0.4)])
def test_excess_risk_matches_monte_carlo(lam, mu):
  rng = np.random.default_rng(2)
  y = rng.poisson(lam, 200_000)
  diff = (nll.poisson_nll_per_example(y, np.full(y.size, mu)) -
          nll.poisson_nll_per_example(y, np.full(y.size, lam)))
  se = diff.std(ddof=1) / math.sqrt(diff.size)
  want = nll.excess_risk([lam], [mu])
  assert abs(diff.mean() - want) <= 4 * se + 1e-12, (diff.mean(), want, se)


def test_excess_risk_bad_input():
  with pytest.raises(ValueError, match='differ in shape'):
    nll.excess_risk_per_example([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match='true rates has negative'):
    nll.excess_risk([-1.0], [1.0])
  with pytest.raises(ValueError, match='no examples'):
    nll.excess_risk([], [])
