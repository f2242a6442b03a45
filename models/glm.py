"""A Poisson GLM baseline (log link) for the difficulty check and the benchmark.

Design matrix: one-hot categorical ids plus each numeric feature (log1p for
heavy-tailed ones, z-scored) and its square, with an L2 penalty chosen on held-out
data. scikit-learn's PoissonRegressor is the solver; it has no offset argument, so
an exposure o enters through the standard identity
  sum_i [o_i mu_i - y_i log(o_i mu_i)] = sum_i o_i [mu_i - (y_i / o_i) log mu_i] + c,
i.e. target y / o with sample weight o. That is the offset likelihood exactly, not
an approximation: rows with a tiny o and a count get a large target but a tiny
weight. (On the benchmark's h=1 world described next, no row with o < 0.088 holds a
conversion, the largest y / o is 11, and an explicit-offset fit of the same
penalised likelihood, scipy L-BFGS on log(o) + eta, is as far off at alpha 1e-6
and agrees at 1e-4: the form was not the fault.) scikit-learn divides the
weighted deviance by sum(o), so the same alpha is a weaker prior for a window
with less exposure; the penalty is chosen per fit, which absorbs that scale.

How the penalty is chosen is what matters. With ~1,900 one-hot columns (1,670
advertisers seen) and, on a 30k-click world, 29 reported conversions in the 7-90 d
window, a weak penalty (alpha 1e-6) lets each advertiser with one conversion take a
coefficient of +11 against an intercept of -13: on new clicks it predicted rates
up to 8e5 and a calibration (sum of predictions / sum of true rates) of 845 in
that window, 169 overall (the benchmark's quick h=1 world, seed 42). Heterogeneity
0 is not immune: the same window's calibration was 7.8 and 42 on quick h=0
worlds of seeds 42 and 43. The weak penalty was chosen because the
benchmark's temporal hold-out (the newest two days of the train split) has zero
observed exposure in the 7-90 d window (a click is 7 days old before that window
starts), so every alpha scored a validation NLL of 0 and the tie went to the first,
the weakest. Hence:
  * best_glm refuses a validation that cannot rank penalties (no reported count,
    or no exposure: its NLL can then only reward predicting less) and breaks ties
    toward the stronger penalty.
  * cv_glm chooses the penalty by K-fold cross-validation over the rows whose
    exposure is positive, folds stratified so that the rare counts spread evenly,
    and refits on all of them: every count informs the choice whatever the
    window's maturity. The benchmark's peer uses it per window.
  * ALPHAS spans 1e-5..1e-1: on the benchmark's quick worlds (h=0 and h=1)
    cross-validation picks 1e-3 or 1e-2 in every window, above the former
    1e-6..1e-4 grid, whose top the old hold-out picked in the other two windows.
    best_glm's default grid (the difficulty check's) is unchanged.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import PoissonRegressor
from sklearn.preprocessing import OneHotEncoder

from models import nll as nll_lib
from schemas import columns

# The L2 penalties cv_glm tries (scikit-learn's alpha, see the module docstring).
ALPHAS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class PoissonGLM:
  """log mu = b + w . phi(x) over the given features (their kinds say how)."""

  def __init__(self, features: Sequence[columns.Column], alpha: float = 1e-5,
               max_iter: int = 500):
    self.features = [c.name for c in features]
    self.alpha = alpha
    self.max_iter = max_iter
    kinds = {c.name: c.kind for c in features}
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


def _lowest(scores: Dict[float, float]) -> float:
  """The alpha with the lowest score; ties go to the stronger penalty."""
  best = None
  for alpha in sorted(scores, reverse=True):
    if best is None or scores[alpha] < scores[best]:
      best = alpha
  return best


def best_glm(train, y_train, valid, y_valid, features: Sequence[columns.Column],
             alphas: Sequence[float] = (1e-6, 1e-5, 1e-4),
             exposure: Optional[np.ndarray] = None,
             valid_exposure: Optional[np.ndarray] = None) -> PoissonGLM:
  """The GLM whose L2 penalty gives the lowest validation NLL.

  Ties go to the stronger penalty.

  Args:
    train, valid: column name -> array.
    y_train, y_valid: count targets; `valid_exposure` scales the validation
      prediction when the validation target is itself thinned.
    features: the features (their kinds say how each enters).
    alphas: L2 penalties to try.
    exposure: training exposure (offset), see PoissonGLM.fit.

  Raises:
    ValueError: the validation holds no reported count or no exposure, so its
      NLL cannot rank the penalties (use cv_glm).
  """
  y_valid = np.asarray(y_valid, dtype=np.float64)
  if valid_exposure is not None and not np.asarray(valid_exposure).sum() > 0:
    raise ValueError('the validation rows have no exposure: every penalty scores '
                     'the same; use cv_glm')
  if not y_valid.sum() > 0:
    raise ValueError('the validation rows hold no reported count: their NLL only '
                     'rewards predicting less; use cv_glm')
  fits, scores = {}, {}
  for alpha in alphas:
    fits[alpha] = PoissonGLM(features, alpha).fit(train, y_train, exposure)
    mu = fits[alpha].predict(valid)
    if valid_exposure is not None:
      mu = mu * valid_exposure
    scores[alpha] = nll_lib.poisson_nll(y_valid, mu)
  return fits[_lowest(scores)]


def cv_glm(data, y, features: Sequence[columns.Column], alphas: Sequence[float] = ALPHAS,
           exposure: Optional[np.ndarray] = None, folds: int = 3,
           seed: int = 0) -> PoissonGLM:
  """The GLM refit on all rows with the penalty of lowest K-fold CV NLL.

  Rows with zero exposure carry no information and are dropped. The rows with a
  count and those without are each dealt round-robin to the folds in a seeded
  random order, so every fold holds about 1/K of the counts. The score of an
  alpha is the Poisson NLL summed over all held-out rows of all folds (each
  predicted by the fit without its fold, times its exposure); ties go to the
  stronger penalty.

  Args:
    data: column name -> array.
    y: count targets.
    features: the features (their kinds say how each enters).
    alphas: L2 penalties to try.
    exposure: the rows' exposure (offset), see PoissonGLM.fit; defaults to 1.
    folds: K.
    seed: seeds the fold assignment.

  Returns:
    The fitted PoissonGLM; its `alpha` is the one chosen and `cv_nll` maps each
    alpha to its mean held-out NLL.

  Raises:
    ValueError: no row with positive exposure holds a count.
  """
  y = np.asarray(y, dtype=np.float64)
  o = np.ones_like(y) if exposure is None else np.asarray(exposure, np.float64)
  keep = np.flatnonzero(o > 0)
  if not y[keep].sum() > 0:
    raise ValueError('no reported count on a row with positive exposure')
  rng = np.random.default_rng(seed)
  fold = np.empty(len(keep), dtype=np.int64)
  for group in (y[keep] > 0, y[keep] == 0):
    idx = np.flatnonzero(group)
    fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
  names = {c.name for c in features}
  data = {k: np.asarray(v)[keep] for k, v in data.items() if k in names}
  y, o = y[keep], o[keep]
  per = {alpha: np.zeros(len(keep)) for alpha in alphas}
  for k in range(folds):
    held = fold == k
    # One design per fold (its encoder and moments from the fold's fitting rows),
    # and each alpha's fit warm-started from the next stronger one's solution:
    # about half the solver iterations of cold starts.
    shape = PoissonGLM(features)
    x_fit = shape._design({f: v[~held] for f, v in data.items()}, fit=True)
    x_held = shape._design({f: v[held] for f, v in data.items()})
    model = PoissonRegressor(max_iter=shape.max_iter, warm_start=True)
    for alpha in sorted(alphas, reverse=True):
      model.set_params(alpha=alpha).fit(x_fit, y[~held] / o[~held],
                                        sample_weight=o[~held])
      per[alpha][held] = nll_lib.poisson_nll_per_example(
          y[held], model.predict(x_held) * o[held])
  scores = {alpha: float(v.mean()) for alpha, v in per.items()}
  glm = PoissonGLM(features, _lowest(scores)).fit(data, y, o)
  glm.cv_nll = scores
  return glm
