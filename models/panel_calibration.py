"""Observability calibrated on the measurement panel, without a teacher
(recipe `offset_panel_calibrated`; issue 14, deliverable 6).

What a careful analyst does with a panel and no teacher: the panel is a random
share of clicks whose conversions are all observed, so within any group of clicks
the panel's reported rate per exposure estimates the true rate, and the other
clicks' reported conversions against it tell how much of the prior's observed
exposure o_w is really observed there. For a group g (of window w):

    r_g = (Y_g / O_g) / (P_g / E_g)

with Y, O the off-panel reported conversions and observed exposures and P, E the
panel's conversions and exposures. The groups follow how conversions get lost,
one level at a time, each against the offsets the levels before corrected:
browser x first-party flag x window (cookie policies), then country (consent
rules), then advertiser (its users' consent and its tag coverage), the last two
pooled over windows: a panel of a few percent has too few conversions for finer
cells. Each log-ratio is shrunk towards its level's pooled value by empirical
Bayes: log r -> c + (log r - c) tau^2 / (tau^2 + v), v its sampling variance
(1/Y + 1/P) and tau^2 the spread left after the sampling noise (method of
moments). The student's offset off the panel becomes o_w times the three ratios
(at most e_w); on the panel it stays e_w.

Hand-written: no library estimates a hierarchical observability ratio from a
panel; the estimator is a few sums.
"""

from typing import Dict, Mapping

import numpy as np
import tensorflow as tf

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


def shrunk_log_ratio(observed: np.ndarray, expected: np.ndarray,
                     panel_counts: np.ndarray, panel_expected: np.ndarray
                     ) -> np.ndarray:
  """Empirical-Bayes shrunk log((observed / expected) / (panel_counts /
  panel_expected)) per group; 0 where a group has no conversion on either side.

  All arrays have the same shape; each element is one group.
  """
  ok = (observed > 0) & (panel_counts > 0) & (expected > 0) & (panel_expected > 0)
  raw = np.zeros(observed.shape)
  var = np.full(observed.shape, np.inf)
  raw[ok] = (np.log(observed[ok] / expected[ok]) -
             np.log(panel_counts[ok] / panel_expected[ok]))
  var[ok] = 1.0 / observed[ok] + 1.0 / panel_counts[ok]
  if ok.sum() < 2:
    return np.zeros(observed.shape)
  # Precision-weighted centre, then the spread the noise does not explain.
  weights = 1.0 / var[ok]
  centre = float((weights * raw[ok]).sum() / weights.sum())
  tau2 = max(0.0, float(np.mean((raw[ok] - centre)**2) - np.mean(var[ok])))
  out = np.zeros(observed.shape)
  # Shrink towards the pooled centre (the prior's overall error), not towards 0,
  # so a prior that is off everywhere is corrected everywhere.
  out[ok] = centre + (raw[ok] - centre) * tau2 / (tau2 + var[ok])
  out[~ok] = centre
  return out


def fit(rows: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """The ratio tables from training examples (numpy columns of FIT_COLUMNS).

  Returns:
    'segment': [N_SEGMENTS, windows]; 'country': [N_COUNTRIES];
    'advertiser': [N_ADVERTISERS]: the ratios r of each level.
  """
  def col(name):
    return np.asarray(rows[name]).reshape(-1)
  panel = col(columns.IN_PANEL) == 1
  segment = segment_index(col(columns.BROWSER).astype(np.int64),
                          col(columns.ADVERTISER_FIRST_PARTY).astype(np.int64))
  y = np.stack([col(c) for c in columns.LABELS], 1).astype(np.float64)
  e = np.stack([col(c) for c in columns.EXPOSURES], 1).astype(np.float64)
  o = np.stack([col(c) for c in columns.OBSERVED_EXPOSURES], 1).astype(np.float64)

  def sums(values, index, mask, n):
    return np.bincount(index[mask], values[mask], minlength=n)
  log_segment = np.stack([shrunk_log_ratio(
      sums(y[:, w], segment, ~panel, N_SEGMENTS),
      sums(o[:, w], segment, ~panel, N_SEGMENTS),
      sums(y[:, w], segment, panel, N_SEGMENTS),
      sums(e[:, w], segment, panel, N_SEGMENTS)) for w in range(y.shape[1])], 1)
  corrected = o * np.exp(log_segment[segment])
  out = {'segment': np.exp(log_segment)}
  # Then country and advertiser, windows pooled, each against the offsets the
  # levels before it corrected.
  for level, name, n in (('country', COUNTRY, N_COUNTRIES),
                         ('advertiser', ADVERTISER, N_ADVERTISERS)):
    index = col(name).astype(np.int64)
    log_ratio = shrunk_log_ratio(
        sums(y.sum(1), index, ~panel, n), sums(corrected.sum(1), index, ~panel, n),
        sums(y.sum(1), index, panel, n), sums(e.sum(1), index, panel, n))
    corrected = corrected * np.exp(log_ratio[index])[:, None]
    out[level] = np.exp(log_ratio)
  return out


def ratios(tables: Dict[str, np.ndarray], browser, first_party, country,
           advertiser):
  """[n, windows] the product of the three levels' ratios (numpy)."""
  return (tables['segment'][segment_index(browser, first_party)] *
          tables['country'][country][:, None] *
          tables['advertiser'][advertiser][:, None])


def apply(tables: Dict[str, np.ndarray], raw: Mapping[str, tf.Tensor],
          observed_exposures: tf.Tensor, exposures: tf.Tensor) -> tf.Tensor:
  """The calibrated offsets [B, windows]: o_w times the ratios off the panel (at
  most e_w), e_w on it."""
  def lookup(table, index):
    return tf.gather(tf.constant(table, tf.float32), tf.reshape(index, [-1]))
  ratio = (lookup(tables['segment'], segment_index(
      raw[columns.BROWSER], raw[columns.ADVERTISER_FIRST_PARTY])) *
           lookup(tables['country'], raw[COUNTRY])[:, None] *
           lookup(tables['advertiser'], raw[ADVERTISER])[:, None])
  calibrated = tf.minimum(observed_exposures * ratio, exposures)
  panel = tf.reshape(raw[columns.IN_PANEL], [-1, 1]) == 1
  return tf.where(panel, exposures, calibrated)
