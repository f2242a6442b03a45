"""Confidence intervals for the quality benchmark, respecting its hierarchy.

The benchmark trains each recipe on W synthetic worlds x S training seeds and
scores every model of a world on the same N held-out clicks of that world. The
noise is nested: worlds > training seeds > scoring clicks.

Design:

* The world is the independent unit. Seeds and clicks within a world share that
  world's data, so they are correlated and cannot be counted as W * S or
  W * S * N independent observations; worlds are generated independently.
* A comparison of recipe A with reference B is paired: per world w,

    r_w = sum_{s, n} (loss_A[s, n] - loss_B[s, n]) / sum_{s, n} loss_B[s, n],

  over the same seeds and clicks on both sides, so the (large) click-to-click
  and world-to-world variation of the loss level cancels in the difference.
  The estimate is mean_w r_w: the relative change of the average world, every
  world weighted equally.
* Its 95% CI is a Student-t interval over the W values r_w (W - 1 degrees of
  freedom). Each r_w already carries its world's seed and click noise, so the
  spread of the r_w measures all three levels at once, with no model of how they
  combine. The t quantile (2.78 at W = 5) matters: a percentile bootstrap over
  only 5 worlds resamples too few distinct values and uses normal-like tails, so
  it under-covers (81-85% for a nominal 95% in tests/test_stats.py's
  simulation, where the t-interval gives 93-95%).
* Variance components are reported so a reader sees where the noise comes from,
  not used in the interval: per world, the between-seed SD of the per-seed
  relative difference (it includes that seed's click noise too) and the
  click-level SE of r_w, the delta-method (linearised ratio) SE over the clicks,
  which are common to A, B and all seeds: with d_n and b_n the click's loss
  difference and reference loss summed over seeds, SE = sqrt(N/(N-1) *
  sum_n (d_n - r_w b_n)^2) / sum_n b_n. At 10^5 clicks it matches a click
  bootstrap (tests/test_stats.py) at a fraction of the cost, which matters for the
  hundreds of comparisons one benchmark run reports. Both
  are averaged over the worlds. The world-to-world SD of r_w (world_sd) is the
  total; set against seed_sd / sqrt(S) and click_se it says whether more worlds,
  seeds or clicks would narrow the CI most (world_sd far above both: worlds).

Losses are per click: NLL (models/nll.py) or excess risk against the true rate,
which drops the count noise. A slice is scored by passing its masked columns.
With W = 1 there is no between-world spread: the CI bounds are NaN.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
from scipy import stats


def interval(values: Sequence[float], level: float = 0.95) -> Tuple[float, float, float]:
  """Student-t interval for the mean of independent units (worlds):
  scipy.stats.t.interval at the units' mean and standard error.

  Args:
    values: one value per independent unit.
    level: confidence level.

  Returns:
    (mean, lo, hi). With a single unit the spread is unknown: lo and hi are NaN.

  Raises:
    ValueError: no values, or a NaN or infinite value.
  """
  v = np.asarray(values, dtype=np.float64).reshape(-1)
  if v.size == 0:
    raise ValueError('interval needs at least one value')
  if not np.all(np.isfinite(v)):
    raise ValueError('interval values have NaN or infinite entries')
  mean = float(v.mean())
  if v.size < 2:
    return mean, float('nan'), float('nan')
  se = float(stats.sem(v))
  if se == 0:  # scipy's t.interval needs scale > 0; every unit agrees
    return mean, mean, mean
  lo, hi = stats.t.interval(level, v.size - 1, loc=mean, scale=se)
  return mean, float(lo), float(hi)


def _worlds(name: str, x: Sequence[np.ndarray]) -> List[np.ndarray]:
  """Validates per-world [S_w, N_w] loss arrays."""
  if len(x) == 0:
    raise ValueError(f'{name} has no worlds')
  out = []
  for w, xw in enumerate(x):
    a = np.asarray(xw, dtype=np.float64)
    if a.ndim != 2:
      raise ValueError(f'{name}[{w}] must be 2-D [seeds, clicks], got shape {a.shape}')
    if a.size == 0:
      raise ValueError(f'{name}[{w}] has no seeds or no clicks (shape {a.shape})')
    if not np.all(np.isfinite(a)):
      raise ValueError(f'{name}[{w}] has NaN or infinite losses')
    out.append(a)
  return out


def _click_se(diff: np.ndarray, ref: np.ndarray) -> float:
  """Delta-method SE over clicks of sum(diff) / sum(ref) (see the module doc).

  diff and ref are already summed over seeds: the clicks are shared by A, B and
  every seed.
  """
  n = diff.size
  if n < 2:
    return float('nan')
  r = diff.sum() / ref.sum()
  z = diff - r * ref
  return float(np.sqrt(n / (n - 1) * np.sum(z * z)) / ref.sum())


def paired_relative(a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                    ) -> Dict:
  """Relative change of recipe A's loss vs reference B, paired within worlds.

  For an A/A row, pass the same recipe under two disjoint seed sets as A and B.

  Args:
    a: per world w, A's per-seed per-click losses, shape [S_w, N_w].
    b: the same for B, on the same seeds (row s of both from training seed s)
      and clicks, so a[w].shape == b[w].shape.

  Returns:
    A JSON-ready dict:
      mean: mean over worlds of r_w (negative: A has lower loss).
      ci95: [lo, hi], Student-t over the worlds (NaN bounds if one world).
      df: degrees of freedom, W - 1.
      worlds: W.
      seeds: training runs per side, summed over worlds.
      per_world: per world, {'relative': r_w, 'seeds': S_w, 'clicks': N_w,
        'seed_sd': ..., 'click_se': ...}.
      world_sd: SD of r_w over worlds (NaN if one world).
      seed_sd: mean over worlds of the between-seed SD of the per-seed relative
        difference (NaN if a world has one seed).
      click_se: mean over worlds of the delta-method click SE of r_w.

  Raises:
    ValueError: different numbers of worlds, shapes that differ within a world,
      arrays that are not 2-D or are empty, non-finite losses, or a world whose
      reference loss does not sum to a positive value.
  """
  a, b = _worlds('a', a), _worlds('b', b)
  if len(a) != len(b):
    raise ValueError(f'a has {len(a)} worlds and b has {len(b)}')
  per_world = []
  for w, (aw, bw) in enumerate(zip(a, b)):
    if aw.shape != bw.shape:
      raise ValueError(f'world {w}: a {aw.shape} and b {bw.shape} differ in shape; '
                       'pair the same seeds and clicks on both sides')
    diff = aw - bw
    ref_seed = bw.sum(axis=1)
    if ref_seed.sum() <= 0:
      raise ValueError(f'world {w}: reference losses sum to {ref_seed.sum()}, '
                       'not a positive value to divide by')
    r_w = float(diff.sum() / ref_seed.sum())
    seed_sd = float('nan')
    if aw.shape[0] > 1:
      if (ref_seed <= 0).any():
        raise ValueError(f'world {w}: a seed\'s reference losses sum to <= 0')
      seed_sd = float(np.std(diff.sum(axis=1) / ref_seed, ddof=1))
    click_se = _click_se(diff.sum(axis=0), bw.sum(axis=0))
    per_world.append({'relative': r_w, 'seeds': aw.shape[0], 'clicks': aw.shape[1],
                      'seed_sd': seed_sd, 'click_se': click_se})
  r = [p['relative'] for p in per_world]
  mean, lo, hi = interval(r)
  return {
      'mean': mean, 'ci95': [lo, hi], 'df': len(r) - 1, 'worlds': len(r),
      'seeds': int(sum(p['seeds'] for p in per_world)), 'per_world': per_world,
      'world_sd': float(np.std(r, ddof=1)) if len(r) > 1 else float('nan'),
      'seed_sd': float(np.mean([p['seed_sd'] for p in per_world])),
      'click_se': float(np.mean([p['click_se'] for p in per_world])),
  }


def mean_ci(x: Sequence[np.ndarray]) -> Dict:
  """An absolute metric (e.g. NLL) with a Student-t CI over worlds.

  Args:
    x: per world w, per-seed per-click values, shape [S_w, N_w].

  Returns:
    {'mean', 'ci95': [lo, hi], 'df', 'worlds', 'per_world'}, where per_world
    holds each world's mean over its seeds and clicks, and mean is their mean.
  """
  per_world = [float(xw.mean()) for xw in _worlds('x', x)]
  mean, lo, hi = interval(per_world)
  return {'mean': mean, 'ci95': [lo, hi], 'df': len(per_world) - 1,
          'worlds': len(per_world), 'per_world': per_world}


def quantile_ci(samples: Sequence[float], q: float, level: float = 0.95
                ) -> Tuple[float, float, float]:
  """A quantile of independent samples with its distribution-free CI.

  The order-statistic interval: the number of samples below the true q-quantile
  is Binomial(n, q), so [X_(l), X_(u)] (1-based order statistics) with l and u
  its level's tails covers it with probability >= level, whatever the
  distribution (latencies are far from normal in the tail). It is
  scipy.stats.quantile_test's confidence_interval.

  Args:
    samples: independent draws (e.g. latencies).
    q: the quantile, in (0, 1).
    level: confidence level.

  Returns:
    (estimate, lo, hi): np.quantile's linear estimate and the interval's
    bounds, clipped to the smallest and largest sample when n is too small for
    the tail asked for.

  Raises:
    ValueError: no samples, a non-finite sample, or q outside (0, 1).
  """
  x = np.sort(np.asarray(samples, dtype=np.float64).reshape(-1))
  if x.size == 0 or not np.all(np.isfinite(x)):
    raise ValueError('quantile_ci needs finite samples')
  if not 0 < q < 1:
    raise ValueError(f'q must be in (0, 1), got {q}')
  est = float(np.quantile(x, q))
  ci = stats.quantile_test(x, q=est, p=q).confidence_interval(level)
  # scipy gives NaN for a bound no order statistic reaches at this n.
  lo = x[0] if np.isnan(ci.low) else ci.low
  hi = x[-1] if np.isnan(ci.high) else ci.high
  return est, float(lo), float(hi)


def quantile_ratio_ci(a: Sequence[float], b: Sequence[float], q: float,
                      level: float = 0.95, resamples: int = 1000, seed: int = 0
                      ) -> Tuple[float, float, float]:
  """The ratio of two samples' q-quantiles with a percentile-bootstrap CI.

  a and b are independent (two models timed in alternation), so each is
  resampled on its own (scipy.stats.bootstrap, paired=False, percentile
  method, seeded). At q = 0.999 the bootstrap rests on the few samples
  above the quantile (10 of 10,000), so read its bounds as approximate.

  Returns:
    (quantile(a) / quantile(b), lo, hi).
  """
  a = np.asarray(a, dtype=np.float64).reshape(-1)
  b = np.asarray(b, dtype=np.float64).reshape(-1)

  def ratio(x, y, axis=-1):
    return np.quantile(x, q, axis=axis) / np.quantile(y, q, axis=axis)
  # paired=False: each sample resampled on its own; batches of 100 resamples
  # bound the memory at 10,000 samples each.
  res = stats.bootstrap((a, b), ratio, n_resamples=resamples, batch=100,
                        vectorized=True, paired=False, confidence_level=level,
                        method='percentile', random_state=np.random.default_rng(seed))
  ci = res.confidence_interval
  return float(ratio(a, b)), float(ci.low), float(ci.high)
