"""A Poisson GLM baseline (log link) for the difficulty check and the benchmark.

Design matrix: one-hot categorical ids plus each numeric feature (log1p for
heavy-tailed ones, z-scored) and its square, with an L2 penalty chosen on a
validation split. scikit-learn's PoissonRegressor is the solver; it has no offset
argument, so an exposure o enters through the standard identity
  sum_i [o_i mu_i - y_i log(o_i mu_i)] = sum_i o_i [mu_i - (y_i / o_i) log mu_i] + c,
i.e. target y / o with sample weight o.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import PoissonRegressor
from sklearn.preprocessing import OneHotEncoder

from models import nll as nll_lib
from schemas import columns


class PoissonGLM:
  """log mu = b + w . phi(x) over the given role-map features."""

  def __init__(self, features: Sequence[str], alpha: float = 1e-5,
               max_iter: int = 500):
    self.features = list(features)
    self.alpha = alpha
    self.max_iter = max_iter
    kinds = {f: columns.BY_NAME[f].kind for f in self.features}
    self.categorical = [f for f in self.features
                        if kinds[f] == columns.Kind.CATEGORICAL]
    self.numeric = [f for f in self.features if f not in self.categorical]
    self._log = {f for f in self.numeric if kinds[f] == columns.Kind.LOG_NUMERIC}
    self._encoder = None
    self._moments: Dict[str, Tuple[float, float]] = {}
    self._model = None

  def _numeric(self, data, fit: bool) -> np.ndarray:
    cols = []
    for f in self.numeric:
      v = np.asarray(data[f], dtype=np.float64)
      if f in self._log:
        v = np.log1p(np.maximum(v, 0.0))
      if fit:
        self._moments[f] = (v.mean(), v.std() or 1.0)
      mean, std = self._moments[f]
      z = (v - mean) / std
      cols += [z, z * z]
    return np.stack(cols, axis=1) if cols else np.zeros((len(data[self.features[0]]), 0))

  def _design(self, data, fit: bool = False):
    parts = []
    if self.categorical:
      ids = np.stack([np.asarray(data[f]) for f in self.categorical], axis=1)
      if fit:
        self._encoder = OneHotEncoder(handle_unknown='ignore').fit(ids)
      parts.append(self._encoder.transform(ids))
    parts.append(sp.csr_matrix(self._numeric(data, fit)))
    return sp.hstack(parts).tocsr()

  def fit(self, data, y, exposure: Optional[np.ndarray] = None) -> 'PoissonGLM':
    """Fits on counts y ~ Poisson(exposure * mu(x)); exposure defaults to 1."""
    y = np.asarray(y, dtype=np.float64)
    weight = None
    if exposure is not None:
      o = np.asarray(exposure, dtype=np.float64)
      keep = o > 0  # zero exposure carries no information about mu
      data = {k: np.asarray(v)[keep] for k, v in data.items() if k in self.features}
      y, weight = y[keep] / o[keep], o[keep]
    self._model = PoissonRegressor(alpha=self.alpha, max_iter=self.max_iter)
    self._model.fit(self._design(data, fit=True), y, sample_weight=weight)
    return self

  def predict(self, data) -> np.ndarray:
    """Predicted rate mu(x) (exposure 1)."""
    return self._model.predict(self._design(data))


def best_glm(train, y_train, valid, y_valid, features: Sequence[str],
             alphas: Sequence[float] = (1e-6, 1e-5, 1e-4),
             exposure: Optional[np.ndarray] = None,
             valid_exposure: Optional[np.ndarray] = None) -> PoissonGLM:
  """The GLM whose L2 penalty gives the lowest validation NLL.

  Args:
    train, valid: column name -> array.
    y_train, y_valid: count targets; `valid_exposure` scales the validation
      prediction when the validation target is itself thinned.
    features: role-map feature names.
    alphas: L2 penalties to try.
    exposure: training exposure (offset), see PoissonGLM.fit.
  """
  best, best_nll = None, np.inf
  for alpha in alphas:
    glm = PoissonGLM(features, alpha).fit(train, y_train, exposure)
    mu = glm.predict(valid)
    if valid_exposure is not None:
      mu = mu * valid_exposure
    value = nll_lib.poisson_nll(y_valid, mu)
    if value < best_nll:
      best, best_nll = glm, value
  return best
