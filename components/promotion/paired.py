"""Paired per-click comparisons: candidate and baseline on the same eval clicks.

Both models score every eval click of the night, so each figure of the promotion
is a difference on the same clicks, and its interval comes from the per-click
differences: the click-to-click variation both models share (which clicks
convert, how many) cancels, and the interval is far narrower than two separate
ones. Everything here is closed-form (no resampling), so the same night always
gives the same decision.

  loss: the mean per-click difference of the exact Poisson NLL, candidate minus
    baseline, in the gating label mode; its 95% interval a Student-t interval on
    the per-click differences (scipy.stats), reported relative to the
    baseline's mean NLL as well;
  bias and spend: |log(sum w scale mu / sum w label)|, the log-error of the
    weighted calibration (w = 1: the bias; w = tCPA: implied over desired
    spend), candidate minus baseline, with a delta-method interval from the
    per-click covariance of (w scale mu_candidate, w scale mu_baseline, w label).

Hand-written: TFMA's intervals are a jackknife over 20 unseeded buckets of the
examples (a run-to-run spread in the decision, and 19 degrees of freedom), and no
library computes a paired delta-method interval of a difference of log ratios;
scipy gives the t quantiles.
"""

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence

import numpy as np
from scipy import stats

from components.promotion import rule as rule_lib
from models import nll

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Night:
  """One night's eval clicks as both models see them (the scored clicks only).

  label: the gating label; scale: the prediction's scale (maturity) in the
  label mode; candidate, baseline: pConvs; tcpa: the clicks' tCPA (None: the
  dataset has none); bucket: their tCPA slice names (None with no tCPA).
  """
  label: np.ndarray
  scale: np.ndarray
  candidate: np.ndarray
  baseline: np.ndarray
  tcpa: Optional[np.ndarray] = None
  bucket: Optional[np.ndarray] = None

  @classmethod
  def of(cls, label, scale, keep, candidate, baseline, tcpa=None, bucket=None
         ) -> 'Night':
    keep = np.asarray(keep, bool).reshape(-1)

    def take(x, dtype=np.float64):
      return None if x is None else np.asarray(x, dtype).reshape(-1)[keep]
    return cls(take(label), take(scale), take(candidate), take(baseline),
               take(tcpa), take(bucket, object))

  @property
  def clicks(self) -> int:
    return int(self.label.size)


def _t_interval(values: np.ndarray, level: float = LEVEL):
  """(mean, lower, upper, standard error) of the mean of `values`."""
  n = values.size
  mean = float(values.mean())
  se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float('inf')
  if not (se > 0 and math.isfinite(se)):
    return mean, mean, mean, 0.0
  lo, hi = stats.t.interval(level, n - 1, loc=mean, scale=se)
  return mean, float(lo), float(hi), se


@dataclasses.dataclass(frozen=True)
class LossDiff:
  """The paired loss comparison: per-click mean difference with its interval,
  the same relative to the baseline's mean loss, and what the night can resolve."""
  diff: rule_lib.Estimate  # mean NLL per click, candidate - baseline
  relative: rule_lib.Estimate  # diff / the baseline's mean NLL
  candidate: float
  baseline: float
  clicks: int
  # The smallest relative difference this many clicks detect with 80% power at
  # the interval's level (two-sided): (t_.975 + t_.80) x the relative SE.
  resolvable: float


def loss_diff(night: Night, level: float = LEVEL, power: float = 0.8) -> LossDiff:
  mu_c = night.scale * night.candidate
  mu_b = night.scale * night.baseline
  lc = nll.poisson_nll_per_example(night.label, mu_c)
  lb = nll.poisson_nll_per_example(night.label, mu_b)
  mean, lo, hi, se = _t_interval(lc - lb, level)
  base = float(lb.mean())
  n = night.clicks
  z = stats.t.ppf(0.5 + level / 2, max(n - 1, 1)) + stats.t.ppf(power, max(n - 1, 1))
  return LossDiff(
      diff=rule_lib.Estimate(mean, lo, hi),
      relative=rule_lib.Estimate(mean / base, lo / base, hi / base),
      candidate=float(lc.mean()), baseline=base, clicks=n,
      resolvable=float(z * se / base) if base > 0 else float('nan'))


def log_error_diff(night: Night, weight: Optional[np.ndarray] = None,
                   level: float = LEVEL) -> Dict[str, rule_lib.Estimate]:
  """The log-error |log(sum w mu / sum w label)| of each model, their ratios,
  and the candidate - baseline difference with a delta-method interval."""
  w = np.ones(night.clicks) if weight is None else np.asarray(weight, np.float64)
  a = w * night.scale * night.candidate
  b = w * night.scale * night.baseline
  y = w * night.label
  n = night.clicks
  means = np.array([a.mean(), b.mean(), y.mean()])
  out = {}
  if not (n > 1 and means[2] > 0 and means[0] > 0 and means[1] > 0):
    nan = rule_lib.Estimate(float('nan'), float('nan'), float('nan'))
    return {'diff': nan, 'candidate_ratio': nan, 'baseline_ratio': nan}
  log_c = math.log(means[0] / means[2])
  log_b = math.log(means[1] / means[2])
  value = abs(log_c) - abs(log_b)
  # d/d(mean a, mean b, mean y) of |log(a/y)| - |log(b/y)|.
  sc, sb = math.copysign(1.0, log_c), math.copysign(1.0, log_b)
  grad = np.array([sc / means[0], -sb / means[1], (sb - sc) / means[2]])
  cov = np.cov(np.stack([a, b, y]))
  se = math.sqrt(max(float(grad @ cov @ grad) / n, 0.0))
  q = stats.norm.ppf(0.5 + level / 2)
  out['diff'] = rule_lib.Estimate(value, value - q * se, value + q * se)
  out['candidate_ratio'] = rule_lib.Estimate.exact(math.exp(log_c))
  out['baseline_ratio'] = rule_lib.Estimate.exact(math.exp(log_b))
  return out


def figures(night: Night, buckets: Sequence[str] = (), level: float = LEVEL
            ) -> Dict[str, Any]:
  """Every paired comparison the areas are judged on: the loss, the bias, the
  spend log-error over every click (tCPA-weighted; without tCPA weighing 1) and
  per tCPA bucket in `buckets` (with its eval conversions, which decide whether
  it can guard: rule.business_area)."""
  out = {'clicks': night.clicks, 'loss': loss_diff(night, level),
         'bias': log_error_diff(night, level=level),
         'spend': log_error_diff(night, night.tcpa, level), 'buckets': {}}
  if night.bucket is not None:
    for name in buckets:
      mask = night.bucket == name
      if mask.sum() > 1:
        part = Night.of(night.label, night.scale, mask, night.candidate,
                        night.baseline, night.tcpa)
        out['buckets'][name] = {**log_error_diff(part, part.tcpa, level),
                                'conversions': float(part.label.sum())}
  return out
