"""The reference Poisson negative log-likelihood (numpy/scipy).

The one implementation the benchmark, reports, the teacher gate and the tests use,
and that the TFMA PoissonLogLoss metric is checked against. It is the exact NLL,
including log(y!), so values are comparable with a Bayes floor:

  nll(y, mu) = mu - y * log(mu) + log Gamma(y + 1)

Non-integer targets (observed + modeled conversions) use the Gamma generalisation.
excess_risk is the closed-form expected NLL above that floor, given true rates.
"""

from typing import Optional, Tuple

import numpy as np
from scipy import special


def _as_array(name: str, values) -> np.ndarray:
  a = np.asarray(values, dtype=np.float64).reshape(-1)
  if not np.all(np.isfinite(a)):
    raise ValueError(f'{name} has NaN or infinite values')
  if (a < 0).any():
    raise ValueError(f'{name} has negative values (min {a.min()})')
  return a


def _pair(name: str, values, pred) -> Tuple[np.ndarray, np.ndarray]:
  """`values` (named `name`) and predictions as checked arrays of one shape."""
  a = _as_array(name, values)
  mu = _as_array('predictions', pred)
  if a.shape != mu.shape:
    raise ValueError(f'{name} {a.shape} and predictions {mu.shape} differ in shape')
  return a, mu


def poisson_nll_per_example(y, mu) -> np.ndarray:
  """Exact Poisson NLL per example; +inf where mu == 0 < y.

  Args:
    y: observed counts, >= 0.
    mu: predicted means, >= 0.

  Raises:
    ValueError: shapes differ, or a value is negative, NaN or infinite.
  """
  y, mu = _pair('labels', y, mu)
  with np.errstate(divide='ignore'):
    return mu - special.xlogy(y, mu) + special.gammaln(y + 1.0)


def poisson_nll(y, mu, weights: Optional[np.ndarray] = None) -> float:
  """Weighted mean of the exact Poisson NLL (weights default to 1)."""
  per = poisson_nll_per_example(y, mu)
  if weights is None:
    if per.size == 0:
      raise ValueError('no examples')
    return float(per.mean())
  w = _as_array('weights', weights)
  if w.shape != per.shape:
    raise ValueError(f'weights {w.shape} and labels {per.shape} differ in shape')
  if w.sum() <= 0:
    raise ValueError('weights sum to zero')
  return float(np.sum(w * per) / w.sum())


def excess_risk_per_example(true_rate, pred) -> np.ndarray:
  """Expected Poisson NLL of `pred` minus the Bayes floor's, per example.

  With y ~ Poisson(lambda), E[nll(y, mu)] - E[nll(y, lambda)] =
  lambda * log(lambda / mu) - lambda + mu (the log(y!) terms cancel), i.e. the
  Poisson KL divergence. It is >= 0, 0 exactly where mu == lambda, mu where
  lambda == 0, and +inf where mu == 0 < lambda, the expectation of
  poisson_nll_per_example's +inf there (no floor on mu, as in the NLL). Being
  exact, it is free of the count noise in y: a less noisy loss to rank models.

  Args:
    true_rate: true Poisson means lambda, >= 0.
    pred: predicted means mu, >= 0.

  Returns:
    float64 array, one value per example.

  Raises:
    ValueError: shapes differ, or a value is negative, NaN or infinite.
  """
  lam, mu = _pair('true rates', true_rate, pred)
  pos = lam > 0
  safe_lam = np.where(pos, lam, 1.0)
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    # For mu within a factor 2 of lambda, lambda * (d - log1p(d)) with
    # d = mu / lambda - 1: the direct form cancels catastrophically when mu is
    # close to lambda, the case that matters. Further out, the direct form, in
    # logs so that mu / lambda can neither overflow nor round d to -1.
    d = mu / safe_lam - 1.0
    near = safe_lam * (d - np.log1p(d))
    far = mu - safe_lam + safe_lam * (np.log(safe_lam) - np.log(mu))
    per = np.where((d >= -0.5) & (d <= 1.0), near, far)
  # Both forms are >= 0 in exact arithmetic; the max only guards rounding.
  return np.where(pos, np.maximum(per, 0.0), mu)


def excess_risk(true_rate, pred) -> float:
  """Mean of excess_risk_per_example over the examples."""
  per = excess_risk_per_example(true_rate, pred)
  if per.size == 0:
    raise ValueError('no examples')
  return float(per.mean())


def relative_change(value: float, reference: float) -> float:
  """(value - reference) / |reference|: negative means lower (better) NLL."""
  return (value - reference) / abs(reference)
