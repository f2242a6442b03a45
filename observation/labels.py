"""Labels as of T: the pure join of clicks with the conversions reported by T.

For each click in the window, and a snapshot time T:
  - `conversions_<w>`: conversions reported by T (conversion_ts <= T) whose delay
    falls in delay window w;
  - `exposure_<w>`: the share of window w's conversions expected to be reported by
    T, from the delay model (fitted on the logs, or the spec's prior): 0 before
    the window opens, 1 once it is mature;
  - `observed_exposure_<w>`: the share of window w's true conversions expected to
    be reported by T *and* observed, under the observability priors (below);
  - `prior_observability_<w>`: the priors' observed share of window w once it is
    mature (1 on the panel);
  - `observed_fraction`: f_b of the click's observability segment (1 without one);
  - `maturity`: sum_w pi_w e_w, the share of the click's conversions expected by T;
  - `snapshot_ts` = T, and the slices `tcpa_bucket` and `browser_observability`
    when the dataset has a tCPA and an observability segment.

Which click columns carry the segment, the first-party flag, tCPA and the panel is
the dataset spec's (LabelSpec names them); without a segment every conversion
counts as observed (f = 1, o_w = e_w).

Vectorised over a batch of clicks; the ExampleGen wraps it in Beam. Structural errors
(a click at or after T, a conversion before its click, duplicate click ids) raise.
Feature values it only passes through or buckets (an unknown segment id, a
non-positive or NaN tCPA) get values the schema rejects (NaN observed fraction, an
empty bucket), so the DataGate stops the run naming them.
"""

import dataclasses
import json
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from observation import delay as delay_lib
from observation import delay_fit
from observation import snapshot
from schemas import columns

# Delay segments (hours) of the observability priors by default: the paper's
# windows' edges plus the cookie caps of docs/observability-world.md (24 h, 7
# days), so that under the spec's mechanisms a click's report probability is
# constant inside a segment and the combination with the exposure is exact.
SEGMENT_EDGES_HOURS = (0.0, 24.0, 48.0, 168.0, 2160.0)


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """What the join needs besides the logs: the windows, the delay model's prior,
  the observability priors and which columns carry a meaning.

  `priors` are the observability priors a measurement study gives: for segment
  id b and first-party flag fp, `priors[2 * b + fp]` is the observed share of
  true conversions in each delay segment (`segment_edges`). Empty: every delay
  segment of b has its observed fraction f_b (observability independent of the
  delay and the advertiser).
  """
  windows: Tuple[columns.Window, ...]
  prior_shares: Tuple[float, ...]
  prior_scales: Tuple[float, ...]
  observed_fractions: Tuple[float, ...] = ()  # indexed by segment id
  full_threshold: float = 0.95
  low_threshold: float = 0.5
  priors: Tuple[Tuple[float, ...], ...] = ()
  segment_edges: Tuple[float, ...] = SEGMENT_EDGES_HOURS
  # Click-log columns with a meaning ('' : the dataset has none).
  segment: str = ''
  first_party: str = ''
  tcpa: str = ''
  panel: str = ''
  # The delay distribution: `fitted` on the window's reported conversions, or
  # the `prior` as it is; fitted by the values of `delay_segment_by` (its bucket
  # count `delay_segments`), shrunk to the prior.
  delay_source: str = 'fitted'
  delay_segment_by: str = ''
  delay_segments: int = 1
  prior_conversions: float = 20.0
  min_segment_conversions: int = 500

  def to_json(self) -> str:
    """The ExampleGen's `label_spec` parameter (config.Config.label_spec builds
    the spec)."""
    d = dataclasses.asdict(self)
    d['windows'] = [dataclasses.asdict(w) for w in self.windows]
    return json.dumps(d, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'LabelSpec':
    d = json.loads(text)
    d['windows'] = tuple(columns.Window(**w) for w in d['windows'])
    for k in ('prior_shares', 'prior_scales', 'observed_fractions', 'segment_edges'):
      d[k] = tuple(d[k])
    d['priors'] = tuple(tuple(p) for p in d['priors'])
    return cls(**d)

  @property
  def window_names(self) -> Tuple[str, ...]:
    return tuple(w.name for w in self.windows)

  def prior_model(self) -> delay_lib.DelayModel:
    return delay_lib.DelayModel(self.prior_scales, self.windows)

  def segment_priors(self) -> np.ndarray:
    """[segments * 2, delay segments]: row 2 b + fp (flat f_b rows when none)."""
    if self.priors:
      return np.asarray(self.priors, dtype=np.float64)
    f = np.asarray(self.observed_fractions or (1.0,), dtype=np.float64)
    return np.repeat(f, 2)[:, None] * np.ones((1, len(self.segment_edges) - 1))


def tcpa_bucket(target_cpa) -> np.ndarray:
  """tCPA slice names ('' for NaN or tCPA <= 0, which the schema rejects)."""
  tcpa = np.asarray(target_cpa, dtype=np.float64)
  idx = np.searchsorted(columns.TCPA_BOUNDARIES, tcpa, side='left')
  out = np.asarray(columns.TCPA_BUCKETS, dtype=object)[np.minimum(idx, 3)]
  out[~(tcpa > 0)] = ''
  return out


def observability_bucket(fraction, spec: LabelSpec) -> np.ndarray:
  """'full' / 'partial' / 'low' by observed fraction ('' for NaN)."""
  f = np.asarray(fraction, dtype=np.float64)
  out = np.full(f.shape, 'partial', dtype=object)
  out[f >= spec.full_threshold] = 'full'
  out[f < spec.low_threshold] = 'low'
  out[np.isnan(f)] = ''
  return out


def observed_fraction(segment, spec: LabelSpec) -> np.ndarray:
  """f_b per click; NaN for a segment id the configuration does not know."""
  b = np.asarray(segment, dtype=np.int64)
  table = np.asarray(spec.observed_fractions, dtype=np.float64)
  known = (b >= 0) & (b < len(table))
  out = np.full(b.shape, np.nan)
  out[known] = table[b[known]]
  return out


def segment_masses(exposure_fn, age_hours, edges: Sequence[float]) -> np.ndarray:
  """[n, windows, delay segments]: P(delay in segment s and <= age | window w).

  Args:
    exposure_fn: age_hours [n] -> [n, windows] exposures (the delay model's CDF
      per window, for each click's delay segment).
    age_hours: [n] click ages at T.
    edges: the delay segments' edges in hours.
  """
  age = np.asarray(age_hours, dtype=np.float64)
  out = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    start = exposure_fn(np.full(len(age), lo))
    out.append(np.maximum(exposure_fn(np.minimum(age, hi)) - start, 0.0))
  return np.stack(out, axis=2)


def prior_rows(clicks: Mapping[str, np.ndarray], spec: LabelSpec,
               n: int) -> np.ndarray:
  """[n, delay segments] each click's observed share by delay segment: row
  2 b + fp of the priors (NaN for an unknown segment or flag, which the schema
  rejects), 1 on the panel; no segment: 1 everywhere."""
  table = spec.segment_priors()
  if not spec.segment:
    prior = np.ones((n, table.shape[1]))
  else:
    b = np.asarray(clicks[spec.segment], dtype=np.int64)
    fp = (np.asarray(clicks[spec.first_party], dtype=np.int64) if spec.first_party
          else np.zeros(n, np.int64))
    row = 2 * b + fp
    known = (b >= 0) & (fp >= 0) & (fp <= 1) & (row < len(table))
    prior = np.full((n, table.shape[1]), np.nan)
    prior[known] = table[row[known]]
  if spec.panel and spec.panel in clicks:
    prior[np.asarray(clicks[spec.panel]).reshape(-1) == 1] = 1.0
  return prior


def _reported(order: np.ndarray, sorted_ids: np.ndarray, conversion_click_id,
              conversion_ts, snapshot_ts: int) -> Tuple[np.ndarray, np.ndarray]:
  """(click position, conversion_ts) of the conversions reported by T whose click
  is among the sorted click ids (the others belong to other windows)."""
  n = len(sorted_ids)
  conv_id = np.asarray(conversion_click_id, dtype=np.int64)
  conv_ts = np.asarray(conversion_ts, dtype=np.int64)
  reported = conv_ts <= snapshot_ts
  conv_id, conv_ts = conv_id[reported], conv_ts[reported]
  pos = np.searchsorted(sorted_ids, conv_id)
  pos_c = np.minimum(pos, max(n - 1, 0))
  matched = (pos < n) & (sorted_ids[pos_c] == conv_id) if n else np.zeros(
      len(conv_id), dtype=bool)
  return order[pos_c[matched]], conv_ts[matched]


def labels_as_of(clicks: Mapping[str, np.ndarray], conversion_click_id: np.ndarray,
                 conversion_ts: np.ndarray, snapshot_ts: int, spec: LabelSpec,
                 delay) -> Dict[str, np.ndarray]:
  """Computes the label, exposure, time and slice columns of clicks as of T.

  Args:
    clicks: arrays [n] for `click_id`, `click_ts` (epoch seconds) and the
      spec's meaning columns (segment, first-party flag, tCPA, panel, the delay
      fit's segment column); all clicks must be before T.
    conversion_click_id: [m] click ids of conversion-log rows (a row per
      conversion). Rows whose click is not in `clicks` belong to other windows
      and are ignored.
    conversion_ts: [m] conversion times (epoch seconds). Rows after T are not yet
      reported; delays beyond the last window count in no window.
    snapshot_ts: T, epoch seconds.
    spec: the windows and the observability model.
    delay: the delay distribution (observation.delay_fit.DelayFit): exposures
      and maturity by click age and delay segment.

  Returns:
    Column name -> array [n], in click order.

  Raises:
    ValueError: a click at or after T, duplicate click ids, or a reported
      conversion earlier than its click.
  """
  click_id = np.asarray(clicks[columns.CLICK_ID], dtype=np.int64)
  click_ts = np.asarray(clicks[columns.CLICK_TS], dtype=np.int64)
  n = len(click_id)
  late = click_ts >= snapshot_ts
  if late.any():
    raise ValueError(f'{int(late.sum())} clicks are at or after T={snapshot_ts} '
                     f'(first click_id {int(click_id[late][0])}); the window is '
                     '[T - W, T)')
  order = np.argsort(click_id, kind='stable')
  sorted_ids = click_id[order]
  dup = sorted_ids[1:] == sorted_ids[:-1]
  if dup.any():
    raise ValueError(f'duplicate click_id {int(sorted_ids[1:][dup][0])} in the '
                     'click log')

  click_pos, conv_ts = _reported(order, sorted_ids, conversion_click_id,
                                 conversion_ts, snapshot_ts)
  delay_h = (conv_ts - click_ts[click_pos]) / snapshot.SECONDS_PER_HOUR
  if (delay_h < 0).any():
    bad = int(click_id[click_pos[delay_h < 0][0]])
    raise ValueError(f'a conversion is reported before its click (click_id {bad})')
  window = delay_lib.window_of(spec.windows, delay_h)
  in_window = window >= 0
  n_windows = len(spec.windows)
  counts = np.bincount(click_pos[in_window] * n_windows + window[in_window],
                       minlength=n * n_windows).reshape(n, n_windows)

  age_h = (snapshot_ts - click_ts) / snapshot.SECONDS_PER_HOUR
  group = delay_segment(clicks, spec, n)
  exposures = delay.exposures(age_h, group)
  prior = prior_rows(clicks, spec, n)
  edges = spec.segment_edges
  masses = segment_masses(lambda a: delay.exposures(a, group), age_h, edges)
  observed = np.einsum('nws,ns->nw', masses, prior)
  mature = segment_masses(lambda a: delay.exposures(a, group),
                          np.full(n, edges[-1]), edges)
  prior_observability = np.einsum('nws,ns->nw', mature, prior)
  if spec.segment:
    fraction = observed_fraction(clicks[spec.segment], spec)
  else:
    fraction = np.ones(n)

  names = spec.window_names
  out: Dict[str, np.ndarray] = {}
  for i, (label, exposure) in enumerate(zip(columns.labels(names),
                                            columns.exposures(names))):
    out[label] = counts[:, i].astype(np.int64)
    out[exposure] = exposures[:, i].astype(np.float32)
  for i, name in enumerate(columns.observed_exposures(names)):
    out[name] = observed[:, i].astype(np.float32)
  for i, name in enumerate(columns.prior_observability(names)):
    out[name] = prior_observability[:, i].astype(np.float32)
  out[columns.OBSERVED_FRACTION] = fraction.astype(np.float32)
  out[columns.MATURITY] = delay.maturity(age_h, group).astype(np.float32)
  out[columns.SNAPSHOT_TS] = np.full(n, snapshot_ts, dtype=np.int64)
  if spec.tcpa:
    out[columns.TCPA_BUCKET] = tcpa_bucket(clicks[spec.tcpa])
  if spec.segment:
    out[columns.BROWSER_OBSERVABILITY] = observability_bucket(fraction, spec)
  return out


def delay_segment(clicks: Mapping[str, np.ndarray], spec: LabelSpec,
                  n: int) -> np.ndarray:
  """[n] the delay fit's segment of each click (0 when the fit is pooled)."""
  if not spec.delay_segment_by:
    return np.zeros(n, np.int64)
  return np.mod(np.asarray(clicks[spec.delay_segment_by], np.int64),
                spec.delay_segments)


def join_window(clicks: Mapping[str, np.ndarray], conversion_click_id: np.ndarray,
                conversion_ts: np.ndarray, snapshot_ts: int, spec: LabelSpec,
                delay, example_columns: Sequence[str]) -> Dict[str, np.ndarray]:
  """The joined examples of a window: the clicks' log columns plus labels as of T.

  Args:
    clicks: click-log columns of the clicks in [T - W, T) (truth columns optional).
    conversion_click_id, conversion_ts, snapshot_ts, spec, delay: as in
      `labels_as_of`.
    example_columns: the examples' columns in order (the dataset's
      `example_columns`); those neither in the input nor computed are left out.

  Returns:
    Every column of `example_columns` present in the input or computed here.
  """
  labels = labels_as_of(clicks, conversion_click_id, conversion_ts, snapshot_ts,
                        spec, delay)
  out = {}
  for name in example_columns:
    if name in labels:
      out[name] = labels[name]
    elif name in clicks:
      out[name] = np.asarray(clicks[name])
  return out


def conversion_keys(clicks: Mapping[str, np.ndarray], spec: LabelSpec
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """What the delay fit needs of each click: ([n] its delay segment, [n] its
  observability prior's row 2 b + fp, -1 when fully observed: the panel, or no
  priors)."""
  n = len(clicks[columns.CLICK_ID])
  group = delay_segment(clicks, spec, n)
  row = np.full(n, -1, np.int64)
  if spec.segment and spec.priors:
    b = np.asarray(clicks[spec.segment], np.int64)
    fp = (np.asarray(clicks[spec.first_party], np.int64) if spec.first_party
          else np.zeros(n, np.int64))
    row = np.where((b >= 0) & (fp >= 0) & (fp <= 1) &
                   (2 * b + fp < len(spec.priors)), 2 * b + fp, -1)
    if spec.panel and spec.panel in clicks:
      row = np.where(np.asarray(clicks[spec.panel]).reshape(-1) == 1, -1, row)
  return group, row


def prior_delay(spec: LabelSpec) -> delay_fit.DelayFit:
  """The spec's prior as the delay model (delay.source prior)."""
  return delay_fit.DelayFit.from_prior(spec.windows, spec.prior_shares,
                                       spec.prior_scales, spec.delay_segments)


def fit_delay(spec: LabelSpec, conversions: np.ndarray) -> delay_fit.DelayFit:
  """The delay model fitted on the window's reported conversions.

  Args:
    spec: the windows, the prior and its strength, the observability priors.
    conversions: [m, 4] per reported conversion: its delay and its click's age
      at T (seconds), the click's delay segment and observability row.
  """
  hour = float(snapshot.SECONDS_PER_HOUR)
  table = spec.segment_priors() if spec.segment and spec.priors else None
  return delay_fit.fit(
      conversions[:, 0] / hour, conversions[:, 1] / hour, spec.windows,
      spec.prior_shares, spec.prior_scales,
      segment=conversions[:, 2].astype(np.int64), n_segments=spec.delay_segments,
      observe_row=conversions[:, 3].astype(np.int64) if table is not None else None,
      observe_edges=spec.segment_edges if table is not None else None,
      observe_table=table, prior_conversions=spec.prior_conversions,
      min_segment_conversions=spec.min_segment_conversions)
