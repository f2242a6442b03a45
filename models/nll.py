"""The reference Poisson negative log-likelihood (numpy/scipy).

The one implementation the benchmark, reports, the teacher gate and the tests use,
and that the TFMA PoissonLogLoss metric is checked against. It is the exact NLL,
including log(y!), so values are comparable with a Bayes floor:

  nll(y, mu) = mu - y * log(mu) + log Gamma(y + 1)

Non-integer targets (observed + modeled conversions) use the Gamma generalisation.
"""

from typing import Optional

import numpy as np
from scipy import special


def _as_array(name: str, values) -> np.ndarray:
  a = np.asarray(values, dtype=np.float64).reshape(-1)
  if not np.all(np.isfinite(a)):
    raise ValueError(f'{name} has NaN or infinite values')
  if (a < 0).any():
    raise ValueError(f'{name} has negative values (min {a.min()})')
  return a


def poisson_nll_per_example(y, mu) -> np.ndarray:
  """Exact Poisson NLL per example; +inf where mu == 0 < y.

  Args:
    y: observed counts, >= 0.
    mu: predicted means, >= 0.

  Raises:
    ValueError: shapes differ, or a value is negative, NaN or infinite.
  """
  y = _as_array('labels', y)
  mu = _as_array('predictions', mu)
  if y.shape != mu.shape:
    raise ValueError(f'labels {y.shape} and predictions {mu.shape} differ in shape')
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


def relative_change(value: float, reference: float) -> float:
  """(value - reference) / |reference|: negative means lower (better) NLL."""
  return (value - reference) / abs(reference)
