"""The reference Poisson NLL against hand-computed values and scipy."""

import math

import numpy as np
import pytest
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
