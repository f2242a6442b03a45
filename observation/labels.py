"""Labels as of T: the pure join of clicks with the conversions reported by T.

For each click in the window, and a snapshot time T:
  - `conversions_<w>`: conversions reported by T (conversion_ts <= T) whose delay
    falls in window w;
  - `exposure_<w>`: the share of window w's conversions expected to be reported by
    T, from the delay model (0 before the window opens, 1 once it is mature);
  - `observed_exposure_<w>`: the share of window w's true conversions expected to
    be reported by T *and* observed, under the observability priors (below);
  - `observed_fraction`: f_b of the click's browser;
  - `snapshot_ts` = T, and the slice columns `tcpa_bucket`, `browser_observability`.

Vectorised over a batch of clicks; the ExampleGen wraps it in Beam. Structural errors
(a click at or after T, a conversion before its click, duplicate click ids) raise.
Feature values it only passes through or buckets (an unknown browser id, a
non-positive or NaN tCPA) get values the schema rejects (NaN observed fraction, an
empty bucket), so the DataGate stops the run naming them.
"""

import dataclasses
import json
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from observation import delay as delay_lib
from observation import snapshot
from schemas import columns

# tCPA slice buckets; the paper's key slice is tCPA > 250.
TCPA_BOUNDARIES = (50.0, 100.0, 250.0)
TCPA_BUCKETS = ('tcpa_le_50', 'tcpa_50_100', 'tcpa_100_250', 'tcpa_gt_250')
HIGH_TCPA_BUCKET = TCPA_BUCKETS[-1]
OBSERVABILITY_BUCKETS = ('full', 'partial', 'low')
LOW_OBSERVABILITY_BUCKET = 'low'

# Delay segments (hours) of the observability priors: the windows' edges plus the
# cookie caps of docs/observability-world.md (24 h, 7 days), so that under the
# spec's mechanisms a click's report probability is constant inside a segment
# and the combination with the exposure below is exact.
SEGMENT_EDGES_HOURS = (0.0, 24.0, 48.0, 168.0, 2160.0)
N_SEGMENTS = len(SEGMENT_EDGES_HOURS) - 1


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """What the join needs besides the logs: the delay and observability models.

  `priors` are the observability priors a measurement study gives: for browser b
  and first-party flag fp, `priors[2 * b + fp]` is the observed share of true
  conversions in each delay segment (SEGMENT_EDGES_HOURS). Empty: every segment
  of browser b has its observed fraction f_b (observability independent of the
  delay and the advertiser).
  """
  delay: delay_lib.DelayModel
  observed_fractions: Tuple[float, ...]  # indexed by browser id
  full_threshold: float = 0.95
  low_threshold: float = 0.5
  priors: Tuple[Tuple[float, ...], ...] = ()

  def to_json(self) -> str:
    """The ExampleGen's `label_spec` parameter (config.Config.label_spec builds
    the spec)."""
    return json.dumps({
        'window_scale_hours': [float(s) for s in self.delay.scale],
        'observed_fractions': list(self.observed_fractions),
        'full_threshold': self.full_threshold,
        'low_threshold': self.low_threshold,
        'priors': [list(p) for p in self.priors],
    }, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'LabelSpec':
    d = json.loads(text)
    return cls(delay=delay_lib.DelayModel(d['window_scale_hours']),
               observed_fractions=tuple(d['observed_fractions']),
               full_threshold=d['full_threshold'],
               low_threshold=d['low_threshold'],
               priors=tuple(tuple(p) for p in d.get('priors', ())))

  def segment_priors(self) -> np.ndarray:
    """[browsers * 2, N_SEGMENTS]: row 2 b + fp (flat f_b rows when none given)."""
    if self.priors:
      return np.asarray(self.priors, dtype=np.float64)
    f = np.asarray(self.observed_fractions, dtype=np.float64)
    return np.repeat(f, 2)[:, None] * np.ones((1, N_SEGMENTS))


def tcpa_bucket(target_cpa) -> np.ndarray:
  """tCPA slice names ('' for NaN or tCPA <= 0, which the schema rejects)."""
  tcpa = np.asarray(target_cpa, dtype=np.float64)
  idx = np.searchsorted(TCPA_BOUNDARIES, tcpa, side='left')
  out = np.asarray(TCPA_BUCKETS, dtype=object)[np.minimum(idx, 3)]
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


def observed_fraction(browser, spec: LabelSpec) -> np.ndarray:
  """f_b per click; NaN for a browser id the configuration does not know."""
  b = np.asarray(browser, dtype=np.int64)
  table = np.asarray(spec.observed_fractions, dtype=np.float64)
  known = (b >= 0) & (b < len(table))
  out = np.full(b.shape, np.nan)
  out[known] = table[b[known]]
  return out


def segment_masses(delay: delay_lib.DelayModel, age_hours) -> np.ndarray:
  """[n, windows, segments]: P(delay in segment s and <= age | window w)."""
  age = np.asarray(age_hours, dtype=np.float64)
  edges = np.asarray(SEGMENT_EDGES_HOURS)
  out = np.zeros((len(age), len(delay.windows), N_SEGMENTS))
  for s in range(N_SEGMENTS):
    lo = delay.exposures(np.full(len(age), edges[s]))
    hi = delay.exposures(np.minimum(age, edges[s + 1]))
    out[:, :, s] = np.maximum(hi - lo, 0.0)
  return out


def matured_window_shares(spec: LabelSpec) -> np.ndarray:
  """[browsers * 2, windows]: the prior's observed share of each window's true
  conversions once the window is mature (row 2 b + fp, as in `segment_priors`):
  the population prior a per-click observability estimate is compared with."""
  mature = segment_masses(spec.delay, [SEGMENT_EDGES_HOURS[-1]])[0]  # [W, S]
  return spec.segment_priors() @ mature.T


def observed_exposures(age_hours, browser, first_party, spec: LabelSpec,
                       in_panel: Optional[Sequence[int]] = None) -> np.ndarray:
  """[n, windows]: the share of each window's true conversions reported by T and
  observed: sum over delay segments of prior_s * P(delay in s, delay <= age | w).

  With priors flat in the delay it is f_b * e_w; a panel click is fully observed
  (its offset is e_w). Unknown browsers or flags give NaN (the schema rejects it).
  """
  b = np.asarray(browser, dtype=np.int64)
  fp = np.asarray(first_party, dtype=np.int64)
  table = spec.segment_priors()
  row = 2 * b + fp
  known = (b >= 0) & (fp >= 0) & (fp <= 1) & (row < len(table))
  prior = np.full((len(b), N_SEGMENTS), np.nan)
  prior[known] = table[row[known]]
  if in_panel is not None:
    prior[np.asarray(in_panel) == 1] = 1.0
  return np.einsum('nws,ns->nw', segment_masses(spec.delay, age_hours), prior)


def labels_as_of(clicks: Mapping[str, np.ndarray], conversion_click_id: np.ndarray,
                 conversion_ts: np.ndarray, snapshot_ts: int,
                 spec: LabelSpec) -> Dict[str, np.ndarray]:
  """Computes the label, exposure, time and slice columns of clicks as of T.

  Args:
    clicks: arrays [n] for `click_id`, `click_ts` (epoch seconds), `browser`,
      `advertiser_first_party` and `target_cpa` (`in_panel` optional); all clicks
      must be before T.
    conversion_click_id: [m] click ids of conversion-log rows. Rows whose click is
      not in `clicks` belong to other windows and are ignored.
    conversion_ts: [m] conversion times (epoch seconds). Rows after T are not yet
      reported; delays beyond the last window (90 days) count in no window.
    snapshot_ts: T, epoch seconds.
    spec: the delay and observability models.

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

  conv_id = np.asarray(conversion_click_id, dtype=np.int64)
  conv_ts = np.asarray(conversion_ts, dtype=np.int64)
  reported = conv_ts <= snapshot_ts
  conv_id, conv_ts = conv_id[reported], conv_ts[reported]
  pos = np.searchsorted(sorted_ids, conv_id)
  pos_c = np.minimum(pos, max(n - 1, 0))
  matched = (pos < n) & (sorted_ids[pos_c] == conv_id) if n else np.zeros(
      len(conv_id), dtype=bool)
  click_pos = order[pos_c[matched]]
  delay_h = (conv_ts[matched] - click_ts[click_pos]) / snapshot.SECONDS_PER_HOUR
  if (delay_h < 0).any():
    bad = int(click_id[click_pos[delay_h < 0][0]])
    raise ValueError(f'a conversion is reported before its click (click_id {bad})')
  window = spec.delay.window_of(delay_h)
  in_window = window >= 0
  n_windows = len(columns.WINDOWS)
  counts = np.bincount(click_pos[in_window] * n_windows + window[in_window],
                       minlength=n * n_windows).reshape(n, n_windows)

  age_h = (snapshot_ts - click_ts) / snapshot.SECONDS_PER_HOUR
  exposures = spec.delay.exposures(age_h)
  fraction = observed_fraction(clicks[columns.BROWSER], spec)

  out: Dict[str, np.ndarray] = {}
  for i, (label, exposure) in enumerate(zip(columns.LABELS, columns.EXPOSURES)):
    out[label] = counts[:, i].astype(np.int64)
    out[exposure] = exposures[:, i].astype(np.float32)
  observed = observed_exposures(age_h, clicks[columns.BROWSER],
                                clicks[columns.ADVERTISER_FIRST_PARTY], spec,
                                clicks.get(columns.IN_PANEL))
  for i, name in enumerate(columns.OBSERVED_EXPOSURES):
    out[name] = observed[:, i].astype(np.float32)
  out[columns.OBSERVED_FRACTION] = fraction.astype(np.float32)
  out[columns.SNAPSHOT_TS] = np.full(n, snapshot_ts, dtype=np.int64)
  out[columns.TCPA_BUCKET] = tcpa_bucket(clicks[columns.TARGET_CPA])
  out[columns.BROWSER_OBSERVABILITY] = observability_bucket(fraction, spec)
  return out


def join_window(clicks: Mapping[str, np.ndarray], conversion_click_id: np.ndarray,
                conversion_ts: np.ndarray, snapshot_ts: int,
                spec: LabelSpec) -> Dict[str, np.ndarray]:
  """The joined examples of a window: the clicks' log columns plus labels as of T.

  Args:
    clicks: click-log columns of the clicks in [T - W, T) (truth columns optional).
    conversion_click_id, conversion_ts, snapshot_ts, spec: as in `labels_as_of`.

  Returns:
    Every column the ExampleGen writes (columns.EXAMPLE_COLUMNS) present in the
    input or computed here, in role-map order.
  """
  labels = labels_as_of(clicks, conversion_click_id, conversion_ts, snapshot_ts,
                        spec)
  out = {}
  for name in columns.EXAMPLE_COLUMNS:
    if name in labels:
      out[name] = labels[name]
    elif name in clicks:
      out[name] = np.asarray(clicks[name])
  return out
