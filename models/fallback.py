"""Failed predictions and the fallback: a band per prediction, checked at serving.

The band (rule `reference_quantile`) is built around the fallback model, the
version the candidate replaces, with a multiplier pair per value of its key, the
dataset's observability segment (the browser; a serving feature, so serving
knows it; without a segment one pooled pair):

  band(x) = [r(x) * exp(q_lo[b]), r(x) * exp(q_hi[b])],   b = browser(x),

where r is the fallback's pConvs and q_lo, q_hi the split-conformal
(1 - level) / 2 and (1 + level) / 2 quantiles of log(target / r) over the
calibration clicks of browser b. With target the true rate (synthetic data,
eval.label_mode truth) the band claims: the click's true rate lies in it with
probability >= level, per browser (a Mondrian split-conformal interval, valid
whatever the fallback's errors, provided the calibration and scored clicks are
exchangeable). That claim is what the world's truth is compared with: the
band's coverage is the share of held-out clicks whose true rate is in their
band. A candidate prediction outside the band fails: it claims a rate that the
fallback plus its measured per-browser error deems implausible at `level`, and
the fallback serves the click.

Why around the fallback with per-browser multipliers: the production recipe
under-predicts by about 1 / f_b on low-observability browsers, and a band
centred on its prediction would flag exactly the correction that makes a
distilled candidate better. The per-browser quantiles of log(truth / r) are
centred on that under-prediction, so the correction sits inside the band.

Without truth (real logs) the target is the candidate's own prediction
(`target: candidate`): the band then holds `level` of the candidate's
calibration predictions, and the failed fraction measures disagreement beyond
that on other clicks; its coverage of the truth cannot be measured there.

Hand-written: TFMA has no per-prediction band (its intervals are on metrics)
and TFX none either; numpy's order statistics are all it needs.
"""

import dataclasses
import json
import math
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from schemas import columns

RULES = ('reference_quantile',)
TARGETS = ('truth', 'candidate')
# Click age relative to the teacher's cutoff T - lag (the click_ts a teacher
# column exists for): the teacher labelled the click, or the click is newer.
BEFORE_CUTOFF, AFTER_CUTOFF = 'before_cutoff', 'after_cutoff'
AGE = 'teacher_cutoff_age'
# metadata.json keys of a pushed version (components/pusher).
METADATA_BAND = 'band'
METADATA_FALLBACK_VERSION = 'fallback_version'
# Where the pushed package keeps the fallback's model (self-contained serving).
FALLBACK_MODEL_FILE = os.path.join('fallback', 'model.tflite')
# Predictions are floored here before taking logs.
_EPS = 1e-12


@dataclasses.dataclass
class Band:
  """A fitted band: per-key log-multipliers around the reference (fallback)."""
  rule: str
  level: float
  target: str
  key: str  # the key column ('' : one pooled pair)
  log_lower: Sequence[float]
  log_upper: Sequence[float]
  calibration_clicks: Sequence[int]

  def keys_of(self, rows: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """Each click's key: its key column's id, 0 for a pooled band."""
    if not self.key:
      return np.zeros(n, np.int64)
    return np.asarray(rows[self.key], np.int64).reshape(-1)

  def bounds(self, reference, keys) -> Tuple[np.ndarray, np.ndarray]:
    """(lower, upper) per click from the reference's prediction and its key."""
    r = np.maximum(np.asarray(reference, np.float64).reshape(-1), _EPS)
    k = np.asarray(keys, np.int64).reshape(-1)
    lo, hi = np.asarray(self.log_lower), np.asarray(self.log_upper)
    # An unknown key gets the widest multipliers fitted (no evidence either way).
    known = (k >= 0) & (k < len(lo))
    idx = np.where(known, k, 0)
    lower = np.where(known, lo[idx], lo.min())
    upper = np.where(known, hi[idx], hi.max())
    return r * np.exp(lower), r * np.exp(upper)

  def to_dict(self) -> Dict:
    return {**dataclasses.asdict(self), 'log_lower': list(map(float, self.log_lower)),
            'log_upper': list(map(float, self.log_upper)),
            'calibration_clicks': list(map(int, self.calibration_clicks))}

  @classmethod
  def from_dict(cls, d: Mapping) -> 'Band':
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def conformal_bounds(scores: np.ndarray, level: float) -> Tuple[float, float]:
  """The split-conformal two-sided bounds of `scores` at `level`.

  The k-th smallest with k = ceil((n + 1)(1 + level) / 2) (upper) and its mirror
  (lower), so a new exchangeable score falls outside each with probability
  <= (1 - level) / 2. Too few scores for that order statistic: the extreme one
  (the band is then the calibration range, its coverage below nominal by at most
  2 / (n + 1)).
  """
  s = np.sort(np.asarray(scores, np.float64).reshape(-1))
  n = s.size
  if n == 0:
    raise ValueError('no calibration scores')
  # The guard keeps 100 * 0.95 from rounding up to the 96th.
  k_hi = math.ceil((n + 1) * (1.0 + level) / 2.0 - 1e-9)
  k_lo = n + 1 - k_hi
  return float(s[max(k_lo, 1) - 1]), float(s[min(k_hi, n) - 1])


def fit(reference, target, keys, level: float, n_keys: int, min_clicks: int = 50,
        rule: str = 'reference_quantile', target_name: str = 'truth',
        key: str = '') -> Band:
  """Fits the band on calibration clicks.

  Args:
    reference: the fallback's pConvs per click.
    target: what the band must contain: the true rate, or the candidate's pConvs.
    keys: the key column per click (browser ids 0..n_keys - 1).
    level: nominal coverage in (0, 1).
    n_keys: how many keys (browsers) the band has multipliers for.
    min_clicks: a key with fewer calibration clicks takes the pooled
      multipliers of all clicks.
    rule: the band rule (RULES).
    target_name: 'truth' or 'candidate' (recorded).
    key: the key column's name ('' : pooled; recorded for serving).
  """
  if rule not in RULES:
    raise ValueError(f'unknown band rule {rule!r}; one of {RULES}')
  r = np.maximum(np.asarray(reference, np.float64).reshape(-1), _EPS)
  t = np.maximum(np.asarray(target, np.float64).reshape(-1), _EPS)
  k = np.asarray(keys, np.int64).reshape(-1)
  scores = np.log(t / r)
  pooled = conformal_bounds(scores, level)
  lower, upper, counts = [], [], []
  for value in range(n_keys):
    mine = scores[k == value]
    lo, hi = conformal_bounds(mine, level) if mine.size >= min_clicks else pooled
    lower.append(lo)
    upper.append(hi)
    counts.append(int(mine.size))
  return Band(rule=rule, level=float(level), target=target_name, key=key,
              log_lower=lower, log_upper=upper, calibration_clicks=counts)


def failed(candidate, lower, upper) -> np.ndarray:
  """A prediction outside its band fails."""
  c = np.asarray(candidate, np.float64).reshape(-1)
  return (c < lower) | (c > upper)


def covered(truth, lower, upper) -> np.ndarray:
  t = np.asarray(truth, np.float64).reshape(-1)
  return (t >= lower) & (t <= upper)


def age_bucket(click_ts, snapshot_ts, lag_seconds: int) -> np.ndarray:
  """BEFORE_CUTOFF for clicks at or before T - lag (the teacher's columns
  exist for them), AFTER_CUTOFF for newer ones."""
  c = np.asarray(click_ts, np.int64).reshape(-1)
  t = np.asarray(snapshot_ts, np.int64).reshape(-1)
  return np.where(c <= t - lag_seconds, BEFORE_CUTOFF, AFTER_CUTOFF).astype(object)


def by_slice(values: np.ndarray, groups: Mapping[str, np.ndarray]) -> Dict:
  """{'overall': {mean, clicks}, column: {value: {mean, clicks}}} of a 0/1 array."""
  v = np.asarray(values, np.float64).reshape(-1)
  out = {'overall': {'mean': float(v.mean()) if v.size else float('nan'),
                     'clicks': int(v.size)}}
  for name, labels in groups.items():
    labels = np.asarray(labels).reshape(-1)
    out[name] = {}
    for value in sorted(set(labels.tolist()), key=str):
      mask = labels == value
      key = value.decode() if isinstance(value, bytes) else str(value)
      out[name][key] = {'mean': float(v[mask].mean()), 'clicks': int(mask.sum())}
  return out


def slice_groups(rows: Mapping[str, np.ndarray], slices: Sequence[str] = (),
                 lag_seconds: Optional[int] = None) -> Dict[str, np.ndarray]:
  """The report's slices of a batch: the dataset's slice columns (observability,
  tCPA bucket, ...), the band's key and (with `lag_seconds`) the click's age
  relative to the teacher's cutoff."""
  out = {}
  for name in slices:
    if name in rows:
      out[name] = np.asarray(rows[name]).reshape(-1)
  if lag_seconds is not None and columns.SNAPSHOT_TS in rows:
    out[AGE] = age_bucket(rows[columns.CLICK_TS], rows[columns.SNAPSHOT_TS],
                          lag_seconds)
  return out


def true_rate(rows: Mapping[str, np.ndarray]) -> np.ndarray:
  """The click's true expected conversions (synthetic data), all windows."""
  names = [c for c in rows if c.startswith(columns.TRUE_RATE_PREFIX + '_')]
  if not names:
    raise ValueError('no true_rate_<window> columns: the truth is synthetic data only')
  return sum(np.asarray(rows[c], np.float64).reshape(-1) for c in names)


def calibration_mask(click_id) -> np.ndarray:
  """Half the clicks calibrate the band, the other half score it: a
  deterministic split on the click id (its parity after a multiplicative hash,
  so neither half leans on time or id ranges)."""
  h = (np.asarray(click_id, np.int64).reshape(-1).astype(np.uint64) *
       np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(63)
  return h == 0


def evaluate(candidate, reference, rows: Mapping[str, np.ndarray], level: float,
             n_keys: int, target: str = 'truth', min_clicks: int = 50,
             rule: str = 'reference_quantile', lag_seconds: Optional[int] = None,
             key: str = '', slices: Sequence[str] = ()) -> Tuple[Band, Dict]:
  """Fits the band on half the clicks and scores it on the other half.

  Args:
    candidate: the candidate's pConvs per click.
    reference: the fallback's pConvs per click.
    rows: the clicks' columns (click_id, the key, the slice columns and, for
      target truth, the true rates).
    level, n_keys, target, min_clicks, rule, key: as fit().
    lag_seconds: the teacher's lag, for the age slice.
    slices: the slice columns the failed fraction is reported by.

  Returns:
    (the band fitted on the calibration half, {'failed': by_slice,
    'coverage': by_slice (target truth only), 'scored_clicks', ...}).
  """
  cand = np.asarray(candidate, np.float64).reshape(-1)
  ref = np.asarray(reference, np.float64).reshape(-1)
  keys = (np.asarray(rows[key]).reshape(-1) if key
          else np.zeros(len(cand), np.int64))
  goal = true_rate(rows) if target == 'truth' else cand
  cal = calibration_mask(rows[columns.CLICK_ID])
  band = fit(ref[cal], goal[cal], keys[cal], level, n_keys if key else 1,
             min_clicks, rule, target, key)
  test = ~cal
  lower, upper = band.bounds(ref[test], keys[test])
  groups = {n: g[test] for n, g in slice_groups(
      rows, list(slices) + ([key] if key else []), lag_seconds).items()}
  report = {'failed': by_slice(failed(cand[test], lower, upper), groups),
            'scored_clicks': int(test.sum()), 'calibration_clicks': int(cal.sum())}
  if target == 'truth':
    report['coverage'] = by_slice(covered(goal[test], lower, upper), groups)
  return band, report
