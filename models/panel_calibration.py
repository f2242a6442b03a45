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
benchmark's pilot worlds 42 and 43 at heterogeneity 0.5 and 1, docs/benchmarks.md):
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

import dataclasses
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf

from config.dataset import DatasetSpec
from models import data
from models import losses
from schemas import columns


@dataclasses.dataclass(frozen=True)
class PanelKeys:
  """The dataset's columns the calibration reads: the panel flag, the
  observability segment (with its id count) and first-party flag that key the
  priors, and the groups (coarse to fine, with their id counts) it corrects by.
  The finest group also indexes the rate index."""
  panel: str
  segment: str
  segments: int
  first_party: str
  groups: Tuple[Tuple[str, int], ...]
  window_names: Tuple[str, ...]

  @classmethod
  def of(cls, dataset: DatasetSpec) -> 'PanelKeys':
    m = dataset.meanings
    return cls(m.panel, m.observability_segment,
               dataset.feature(m.observability_segment).bucket_count(),
               m.first_party,
               tuple((g, dataset.feature(g).bucket_count())
                     for g in m.panel_calibration_groups),
               dataset.window_names())

  def key_columns(self) -> Tuple[str, ...]:
    """The columns the ratios are looked up by."""
    return tuple(dict.fromkeys(
        (self.segment,) + ((self.first_party,) if self.first_party else ()) +
        tuple(g for g, _ in self.groups)))

  def fit_columns(self) -> Tuple[str, ...]:
    """What the fit reads."""
    w = self.window_names
    return self.key_columns() + (self.panel,) + (
        columns.labels(w) + columns.exposures(w) + columns.observed_exposures(w))

  @property
  def n_segments(self) -> int:
    return self.segments * 2


def segment_index(segment, first_party):
  """Row 2 b + fp, as the priors (observation.labels.LabelSpec.priors)."""
  return segment * 2 + first_party


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


def rate_index(group: np.ndarray, n_groups: int, counts: np.ndarray,
               observed: np.ndarray, off_panel: np.ndarray,
               prior_conversions: float = RATE_INDEX_CONVERSIONS) -> np.ndarray:
  """[n] each click's (finest) group's reported conversions per observed exposure
  off the panel, smoothed towards the pooled rate (the exposure weights of
  `fit`)."""
  y = np.bincount(group[off_panel], counts[off_panel], minlength=n_groups)
  o = np.bincount(group[off_panel], observed[off_panel], minlength=n_groups)
  pooled = max(y.sum(), 1.0) / max(o.sum(), 1e-300)
  return ((y + prior_conversions) / (o + prior_conversions / pooled))[group]


def _first_party(keys: PanelKeys, get, n) :
  return get(keys.first_party) if keys.first_party else np.zeros(n, np.int64)


def fit(rows: Mapping[str, np.ndarray], keys: PanelKeys) -> Dict[str, np.ndarray]:
  """The ratio tables from training examples (numpy columns of
  `keys.fit_columns()`).

  Returns:
    'segment': [segments * 2, windows] the rescaling that keeps each segment x
    first-party x window cell's mean offset at the prior's; per group (its
    column's name): [its ids] the ratios r of that level.
  """
  def col(name):
    return np.asarray(rows[name]).reshape(-1)
  w = keys.window_names
  panel = col(keys.panel) == 1
  y = np.stack([col(c) for c in columns.labels(w)], 1).astype(np.float64).sum(1)
  segment = segment_index(col(keys.segment).astype(np.int64),
                          _first_party(keys, lambda c: col(c).astype(np.int64),
                                       len(y)))
  e = np.stack([col(c) for c in columns.exposures(w)], 1).astype(np.float64)
  o = np.stack([col(c) for c in columns.observed_exposures(w)], 1).astype(np.float64)
  finest, n_finest = keys.groups[-1]
  weight = rate_index(np.mod(col(finest).astype(np.int64), n_finest), n_finest, y,
                      o.sum(1), ~panel)
  e_w, o_w = e.sum(1) * weight, o.sum(1) * weight

  def sums(values, index, mask, n):
    return np.bincount(index[mask], values[mask], minlength=n)
  ratio = np.ones(len(y))
  out = {}
  for name, n in keys.groups:
    index = np.mod(col(name).astype(np.int64), n)
    log_ratio = smoothed_log_ratio(
        sums(y, index, ~panel, n), sums(o_w * ratio, index, ~panel, n),
        sums(y, index, panel, n), sums(e_w, index, panel, n))
    ratio = ratio * np.exp(log_ratio[index])
    out[name] = np.exp(log_ratio)
  # The prior's level per segment x first-party x window, restored.
  n_seg = keys.n_segments
  prior = np.stack([sums(o[:, i] * weight, segment, ~panel, n_seg)
                    for i in range(o.shape[1])], 1)
  moved = np.stack([sums(o[:, i] * weight * ratio, segment, ~panel, n_seg)
                    for i in range(o.shape[1])], 1)
  out['segment'] = np.where(moved > 0, prior / np.maximum(moved, 1e-300), 1.0)
  return out


def fit_from_files(patterns: Sequence[str], who: str,
                   dataset: DatasetSpec) -> Dict[str, np.ndarray]:
  """`fit` on every example under `patterns` (a split's files).

  Raises:
    ValueError: the examples hold no panel click (`who` names the setting that
      needs them).
  """
  keys = PanelKeys.of(dataset)
  ds = data.raw_dataset(patterns, keys.fit_columns(), 65536, dataset,
                        shuffle=False, repeat=False, drop_remainder=False)
  batches = list(ds.as_numpy_iterator())
  rows = {c: np.concatenate([b[c] for b in batches]) for c in batches[0]}
  if not (rows[keys.panel] == 1).any():
    raise ValueError(f'{who} needs measurement-panel clicks ({keys.panel} = 1); '
                     'the training split has none')
  return fit(rows, keys)


def summary(tables: Dict[str, np.ndarray]) -> Dict:
  """What the panel said of the prior, level by level (ratio quantiles)."""
  return {level: np.quantile(table, [0.05, 0.5, 0.95]).round(4).tolist()
          for level, table in tables.items()}


def ratios(tables: Dict[str, np.ndarray], keys: PanelKeys,
           rows: Mapping[str, np.ndarray]):
  """[n, windows] the product of the levels' ratios (numpy, from the key columns)."""
  n = len(np.asarray(rows[keys.segment]).reshape(-1))
  out = tables['segment'][segment_index(
      np.asarray(rows[keys.segment], np.int64).reshape(-1),
      _first_party(keys, lambda c: np.asarray(rows[c], np.int64).reshape(-1), n))]
  for name, size in keys.groups:
    out = out * tables[name][np.mod(np.asarray(rows[name], np.int64).reshape(-1),
                                    size)][:, None]
  return out


def lookup_ratios(tables: Dict[str, np.ndarray], keys: PanelKeys,
                  raw: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """[B, windows] the product of the levels' ratios (TF, from the raw key
  columns)."""
  def lookup(table, index):
    return tf.gather(tf.constant(table, tf.float32), tf.reshape(index, [-1]))
  first_party = (raw[keys.first_party] if keys.first_party
                 else tf.zeros_like(raw[keys.segment]))
  out = lookup(tables['segment'], segment_index(raw[keys.segment], first_party))
  for name, size in keys.groups:
    out = out * lookup(tables[name], tf.math.floormod(raw[name], size))[:, None]
  return out


def apply(tables: Dict[str, np.ndarray], keys: PanelKeys,
          raw: Mapping[str, tf.Tensor], panel: tf.Tensor,
          observed_exposures: tf.Tensor, exposures: tf.Tensor) -> tf.Tensor:
  """The calibrated offsets [B, windows]: o_w times the ratios off the panel (at
  most e_w), e_w on it (`panel`: [B, 1] the panel flag)."""
  calibrated = tf.minimum(observed_exposures * lookup_ratios(tables, keys, raw),
                          exposures)
  return tf.where(tf.reshape(panel, [-1, 1]) == 1, exposures, calibrated)


def calibrate_targets(targets: Dict[str, tf.Tensor], tables: Dict[str, np.ndarray],
                      keys: PanelKeys) -> Dict[str, tf.Tensor]:
  """Training targets with the calibrated observed exposures, the lookup
  columns (`keys.key_columns()`, read raw beside the features) taken out;
  `targets` holds them and the panel flag (losses.IN_PANEL)."""
  targets = dict(targets)
  raw = {c: targets.pop(c) for c in keys.key_columns()}
  targets[losses.OBSERVED_EXPOSURES] = apply(
      tables, keys, raw, targets[losses.IN_PANEL],
      targets[losses.OBSERVED_EXPOSURES], targets[losses.EXPOSURES])
  return targets
