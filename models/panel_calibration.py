"""Observability calibrated on the measurement panel, without a teacher
(recipe `offset_panel_calibrated`, and the teacher's offsets with
`model.teacher_panel_calibration`; issue 14, deliverables 5 and 6).

What a careful analyst does with a panel and no teacher: the panel is a random
share of clicks whose conversions are all observed, so within any group of clicks
the panel's reported rate per exposure estimates the true rate, and the other
clicks' reported conversions against it tell how much of the prior's observed
exposure o_w is really observed there. For a group g:

    r_g = (Y_g / O_g) / (P_g / E_g)

with Y, O the off-panel reported conversions and observed exposures and P, E the
panel's conversions and exposures, all windows pooled. The groups are what the
prior cannot see: country (consent rules), then advertiser (its users' consent
and its tag coverage), each against the offsets the level before corrected.

Three choices make it beat the prior rather than add noise to it (measured on the
benchmark's pilot worlds 42 and 43 at heterogeneity 0.5 and 1, README):
  * The prior's browser x first-party x window level is kept, not re-estimated:
    it is a measurement study's population share, exact on average, while a panel
    of ~100 conversions spread over 30 such cells re-estimates it with ~50%
    noise. After the two levels, each browser x first-party x window cell is
    rescaled so its mean offset is the prior's again (the `segment` table), so
    the ratios move observability between countries and advertisers and never
    the prior's level.
  * Exposures are weighted by a rate index per advertiser (its smoothed off-panel
    reported rate per observed exposure): a group's few panel clicks are a random
    draw of advertisers whose rates differ by orders of magnitude, and weighting
    their exposure by the rate compares like with like. Any factor of the index
    that is constant within a group cancels in r_g, so the index may carry the
    advertiser's own observability.
  * Each group's two rates are shrunk towards their level's pooled rates
    (Gamma-Poisson posterior means with PRIOR_CONVERSIONS pseudo-conversions).

Hand-written: no library estimates a hierarchical observability ratio from a
panel; the estimator is a few sums.
"""

from typing import Dict, Mapping, Sequence

import numpy as np
import tensorflow as tf

from models import data
from models import losses
from schemas import columns

COUNTRY = 'country'
ADVERTISER = 'advertiser_id'
N_BROWSERS = columns.BY_NAME[columns.BROWSER].buckets
N_COUNTRIES = columns.BY_NAME[COUNTRY].buckets
N_ADVERTISERS = columns.BY_NAME[ADVERTISER].buckets
N_SEGMENTS = N_BROWSERS * 2
# The columns the ratios are looked up by, and what the fit reads.
KEY_COLUMNS = (columns.BROWSER, columns.ADVERTISER_FIRST_PARTY, COUNTRY, ADVERTISER)
FIT_COLUMNS = KEY_COLUMNS + (columns.IN_PANEL,) + (
    columns.LABELS + columns.EXPOSURES + columns.OBSERVED_EXPOSURES)


def segment_index(browser, first_party):
  """Row 2 b + fp, as the priors (observation.labels.LabelSpec.priors)."""
  return browser * 2 + first_party


# Prior strength of each group's rates, in conversions (Gamma-Poisson): a group
# with far fewer conversions keeps about its level's pooled ratio, one with far
# more its own. Fixed rather than fitted: with a panel of ~100 conversions the
# between-country variance cannot be estimated (the method of moments gives 0
# in 2 of the 4 pilot worlds), and 100 held the error below the prior's at both
# heterogeneities and panel shares of 3% and 30%, where 20 and 50 did not at 0.5.
PRIOR_CONVERSIONS = 100.0
# Pseudo-conversions of the advertiser rate index (the exposure weights).
RATE_INDEX_CONVERSIONS = 5.0


def smoothed_log_ratio(observed: np.ndarray, expected: np.ndarray,
                       panel_counts: np.ndarray, panel_expected: np.ndarray,
                       prior_conversions: float = PRIOR_CONVERSIONS) -> np.ndarray:
  """Per group, log of (observed / expected) / (panel_counts / panel_expected),
  each rate smoothed towards its pooled value by `prior_conversions` pseudo-
  conversions (the posterior mean of a Gamma prior centred there).

  No group is dropped for having no conversion (conditioning on a count > 0
  would bias small groups' rates up); a group with no exposure on a side gets
  that side's pooled rate. All arrays have the same shape, one element a group.
  """
  observed, expected, panel_counts, panel_expected = (
      np.asarray(x, np.float64) for x in (observed, expected, panel_counts,
                                           panel_expected))
  if observed.sum() <= 0 or panel_counts.sum() <= 0:
    return np.zeros(observed.shape)  # nothing to learn from: keep the prior

  def rate(y, exposure):
    pooled = y.sum() / exposure.sum()
    return (y + prior_conversions) / (exposure + prior_conversions / pooled)
  return (np.log(rate(observed, expected)) -
          np.log(rate(panel_counts, panel_expected)))


def rate_index(advertiser: np.ndarray, counts: np.ndarray, observed: np.ndarray,
               off_panel: np.ndarray,
               prior_conversions: float = RATE_INDEX_CONVERSIONS) -> np.ndarray:
  """[n] each click's advertiser's reported conversions per observed exposure off
  the panel, smoothed towards the pooled rate (the exposure weights of `fit`)."""
  y = np.bincount(advertiser[off_panel], counts[off_panel], minlength=N_ADVERTISERS)
  o = np.bincount(advertiser[off_panel], observed[off_panel], minlength=N_ADVERTISERS)
  pooled = max(y.sum(), 1.0) / max(o.sum(), 1e-300)
  return ((y + prior_conversions) / (o + prior_conversions / pooled))[advertiser]


def fit(rows: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """The ratio tables from training examples (numpy columns of FIT_COLUMNS).

  Returns:
    'segment': [N_SEGMENTS, windows] the rescaling that keeps each browser x
    first-party x window cell's mean offset at the prior's; 'country':
    [N_COUNTRIES]; 'advertiser': [N_ADVERTISERS]: the ratios r of each level.
  """
  def col(name):
    return np.asarray(rows[name]).reshape(-1)
  panel = col(columns.IN_PANEL) == 1
  segment = segment_index(col(columns.BROWSER).astype(np.int64),
                          col(columns.ADVERTISER_FIRST_PARTY).astype(np.int64))
  y = np.stack([col(c) for c in columns.LABELS], 1).astype(np.float64).sum(1)
  e = np.stack([col(c) for c in columns.EXPOSURES], 1).astype(np.float64)
  o = np.stack([col(c) for c in columns.OBSERVED_EXPOSURES], 1).astype(np.float64)
  weight = rate_index(col(ADVERTISER).astype(np.int64), y, o.sum(1), ~panel)
  e_w, o_w = e.sum(1) * weight, o.sum(1) * weight

  def sums(values, index, mask, n):
    return np.bincount(index[mask], values[mask], minlength=n)
  ratio = np.ones(len(y))
  out = {}
  for level, name, n in (('country', COUNTRY, N_COUNTRIES),
                         ('advertiser', ADVERTISER, N_ADVERTISERS)):
    index = col(name).astype(np.int64)
    log_ratio = smoothed_log_ratio(
        sums(y, index, ~panel, n), sums(o_w * ratio, index, ~panel, n),
        sums(y, index, panel, n), sums(e_w, index, panel, n))
    ratio = ratio * np.exp(log_ratio[index])
    out[level] = np.exp(log_ratio)
  # The prior's level per browser x first-party x window, restored.
  prior = np.stack([sums(o[:, w] * weight, segment, ~panel, N_SEGMENTS)
                    for w in range(o.shape[1])], 1)
  moved = np.stack([sums(o[:, w] * weight * ratio, segment, ~panel, N_SEGMENTS)
                    for w in range(o.shape[1])], 1)
  out['segment'] = np.where(moved > 0, prior / np.maximum(moved, 1e-300), 1.0)
  return out


def fit_from_files(patterns: Sequence[str], who: str) -> Dict[str, np.ndarray]:
  """`fit` on every example under `patterns` (a split's files).

  Raises:
    ValueError: the examples hold no panel click (`who` names the setting that
      needs them).
  """
  ds = data.raw_dataset(patterns, FIT_COLUMNS, 65536, shuffle=False, repeat=False,
                        drop_remainder=False)
  batches = list(ds.as_numpy_iterator())
  rows = {c: np.concatenate([b[c] for b in batches]) for c in batches[0]}
  if not (rows[columns.IN_PANEL] == 1).any():
    raise ValueError(f'{who} needs measurement-panel clicks (in_panel = 1); the '
                     'training split has none')
  return fit(rows)


def summary(tables: Dict[str, np.ndarray]) -> Dict:
  """What the panel said of the prior, level by level (ratio quantiles)."""
  return {level: np.quantile(table, [0.05, 0.5, 0.95]).round(4).tolist()
          for level, table in tables.items()}


def ratios(tables: Dict[str, np.ndarray], browser, first_party, country,
           advertiser):
  """[n, windows] the product of the three levels' ratios (numpy)."""
  return (tables['segment'][segment_index(browser, first_party)] *
          tables['country'][country][:, None] *
          tables['advertiser'][advertiser][:, None])


def lookup_ratios(tables: Dict[str, np.ndarray],
                  raw: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """[B, windows] the product of the three levels' ratios (TF, from the raw
  KEY_COLUMNS)."""
  def lookup(table, index):
    return tf.gather(tf.constant(table, tf.float32), tf.reshape(index, [-1]))
  return (lookup(tables['segment'], segment_index(
      raw[columns.BROWSER], raw[columns.ADVERTISER_FIRST_PARTY])) *
          lookup(tables['country'], raw[COUNTRY])[:, None] *
          lookup(tables['advertiser'], raw[ADVERTISER])[:, None])


def apply(tables: Dict[str, np.ndarray], raw: Mapping[str, tf.Tensor],
          observed_exposures: tf.Tensor, exposures: tf.Tensor) -> tf.Tensor:
  """The calibrated offsets [B, windows]: o_w times the ratios off the panel (at
  most e_w), e_w on it."""
  calibrated = tf.minimum(observed_exposures * lookup_ratios(tables, raw), exposures)
  panel = tf.reshape(raw[columns.IN_PANEL], [-1, 1]) == 1
  return tf.where(panel, exposures, calibrated)


def calibrate_targets(targets: Dict[str, tf.Tensor],
                      tables: Dict[str, np.ndarray]) -> Dict[str, tf.Tensor]:
  """Training targets with the calibrated observed exposures, the lookup
  columns (KEY_COLUMNS, read raw beside the features) taken out; `targets` holds
  them and in_panel."""
  targets = dict(targets)
  keys = {c: targets.pop(c) for c in KEY_COLUMNS}
  keys[columns.IN_PANEL] = targets[columns.IN_PANEL]
  targets[losses.OBSERVED_EXPOSURES] = apply(
      tables, keys, targets[losses.OBSERVED_EXPOSURES], targets[losses.EXPOSURES])
  return targets
