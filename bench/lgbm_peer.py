"""A LightGBM Poisson peer for the quality benchmark: the tabular peer
(docs/architecture.md §12; docs/benchmarks.md, "Student quality").

Gradient-boosted trees on the serving features, fitted to the reported counts with
the same offsets as the `offset` student (the observed exposure o_w,
docs/architecture.md §4)
and no teacher. Beside the `offset` student it tells how much of a student's NLL
comes from the network and how much from the recipe; beside the Poisson GLM, how
much a flexible tabular model gains on the same features.

One booster per delay window w, objective 'poisson' (log link), with
  reported_w ~ Poisson(o_w * exp(b_w + F_w(x))),
where log(o_w) + b_w is the booster's init_score (the offset, which the model does
not learn, plus the window's base log-rate b_w) and F_w the trees. LightGBM skips
its own boost-from-average when an init_score is given, so b_w stands in for it:
without it the first trees walk the intercept down from a rate of 1 (at rates
near 0.03, in a synthetic check: twice the rounds, 12% too high at the early
stop). The prediction is the total true rate, with no offset:
sum_w exp(b_w + F_w(x)), what pConvs estimates.

lightgbm is a bench-only dependency (the optional extra `bench` in pyproject.toml);
the pipeline, its components and its images never import this module.
"""

import os
from typing import Dict, Optional, Tuple

# OpenMP threads that spin while waiting slow LightGBM ten- to twentyfold when
# other processes share the 2 cores; libgomp reads this once, when it loads.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import lightgbm as lgb  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from schemas import columns  # pylint: disable=g-import-not-at-top
from world import synthetic

FEATURES = synthetic.SERVING_FEATURES
# The int64 ids: split as categories, not by order.
CATEGORICAL = tuple(f for f in FEATURES
                    if synthetic.column(f).kind == columns.Kind.CATEGORICAL)

# Defaults for ~100k-500k rows on 2 cores. deterministic needs a fixed histogram
# layout (force_row_wise) to give the same trees run to run.
DEFAULT_PARAMS = {
    'objective': 'poisson',
    'metric': 'poisson',
    'learning_rate': 0.05,
    'num_leaves': 31,
    'min_data_in_leaf': 100,
    'num_threads': 2,
    'deterministic': True,
    'force_row_wise': True,
    'verbose': -1,
}
# Tried per window, the one with the lowest held-out Poisson loss kept: with the
# defaults alone the high-cardinality categorical splits (2,000 advertisers) overfit
# rare conversions (measured on the bench's first world: early stop at 6 rounds on
# 2-7 d, calibration 0.80 on new clicks); the regularised setting shrinks them.
CANDIDATES = (
    {},
    {'min_data_in_leaf': 400, 'num_leaves': 15, 'lambda_l2': 10.0, 'cat_smooth': 50.0,
     'cat_l2': 50.0, 'min_data_per_group': 400, 'max_cat_threshold': 16},
)
NUM_ROUNDS = 2000
EARLY_STOPPING_ROUNDS = 50
DAY_SECONDS = 86400


def _matrix(data: Dict[str, np.ndarray]) -> np.ndarray:
  # float64 holds every int64 id exactly (they are bucket indices, far below 2**53).
  return np.column_stack([np.asarray(data[f], dtype=np.float64) for f in FEATURES])


def _dataset(x, y, init_score, reference=None) -> lgb.Dataset:
  return lgb.Dataset(x, label=y, init_score=init_score, reference=reference,
                     feature_name=list(FEATURES),
                     categorical_feature=list(CATEGORICAL), free_raw_data=True)


def fit_predict(train: Dict[str, np.ndarray], score: Dict[str, np.ndarray],
                seed: int = 0, valid_days: float = 2.0,
                params: Optional[dict] = None) -> Tuple[np.ndarray, Dict]:
  """Fits one Poisson booster per window on `train`; predicts on `score`.

  Per window, rows with o_w == 0 (the observed exposure) carry no information and are
  dropped. Of the rest, the last `valid_days` days by click_ts are held out for
  early stopping. The cut is per window: the newest training clicks are too young
  for the later windows (e_w == 0 until a click is 7 days old for 7_90d), so one
  cut for all windows would leave 7_90d nothing to stop on.

  Args:
    train: column name -> array: the serving features, synthetic.LABELS,
      synthetic.OBSERVED_EXPOSURES and columns.CLICK_TS.
    score: column name -> array with at least the serving features.
    seed: LightGBM's seed.
    valid_days: days of the newest informative clicks held out per window.
    params: LightGBM parameters overriding DEFAULT_PARAMS (each of CANDIDATES
      is tried on top of them, the best on the held-out clicks kept).

  Returns:
    The predicted total true rate per scoring row (float64), and an info dict:
    'params', and per window name 'best_iteration', 'base_log_rate',
    'train_rows', 'valid_rows' and 'chosen_params' (the candidate kept).

  Raises:
    ValueError: a window has no informative rows before its validation cut, or
      no reported conversion on them.
  """
  params = {**DEFAULT_PARAMS, 'seed': seed, **(params or {})}
  x_all = _matrix(train)
  x_score = _matrix(score)
  ts = np.asarray(train[columns.CLICK_TS], dtype=np.int64)
  total = np.zeros(len(x_score))
  info = {'params': params, 'best_iteration': {}, 'base_log_rate': {},
          'train_rows': {}, 'valid_rows': {}}
  for name, label, exposure in zip(synthetic.WINDOW_NAMES, synthetic.LABELS,
                                   synthetic.OBSERVED_EXPOSURES):
    offset = np.asarray(train[exposure], dtype=np.float64)
    keep = offset > 0
    if not keep.any():
      raise ValueError(f'window {name}: no training rows with o_w > 0')
    hold = ts >= ts[keep].max() - valid_days * DAY_SECONDS
    fit, valid = keep & ~hold, keep & hold
    y = np.asarray(train[label], dtype=np.float64)
    if not fit.any() or y[fit].sum() <= 0:
      raise ValueError(
          f'window {name}: no informative rows, or no reported conversion, '
          f'before the last {valid_days} days')
    base = float(np.log(y[fit].sum() / offset[fit].sum()))
    dtrain = _dataset(x_all[fit], y[fit], np.log(offset[fit]) + base)
    dvalid = _dataset(x_all[valid], y[valid], np.log(offset[valid]) + base,
                      reference=dtrain)
    best = None
    for candidate in CANDIDATES:
      booster = lgb.train(
          {**params, **candidate}, dtrain, num_boost_round=NUM_ROUNDS,
          valid_sets=[dvalid], valid_names=['valid'],
          callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)])
      loss = booster.best_score['valid']['poisson']
      if best is None or loss < best[0]:
        best = (loss, booster, candidate)
    _, booster, chosen = best
    info.setdefault('chosen_params', {})[name] = chosen
    # raw_score excludes the init_score, so this is the log-rate without offset.
    raw = booster.predict(x_score, num_iteration=booster.best_iteration,
                          raw_score=True)
    total += np.exp(base + raw)
    info['best_iteration'][name] = int(booster.best_iteration)
    info['base_log_rate'][name] = base
    info['train_rows'][name] = int(fit.sum())
    info['valid_rows'][name] = int(valid.sum())
  return total, info
