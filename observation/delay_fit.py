"""Measures the click-to-conversion delay model from the conversion log.

Inside delay window w = [a_w, b_w) a delay is a_w + Exp(s_w) truncated at b_w, and
a click's conversions fall in window w with share pi_w (observation/delay.py). On
real logs nobody hands these over: `fit` estimates them per delay segment from the
conversions reported by the snapshot time T, by maximising the likelihood of each
delay d given that it was reported (A: the click's age at T, x = d - a_w):

  p(d | reported) = pi_w f_w(x) q_r(d) /
                    sum_v pi_v int_0^{min(A, b_v) - a_v} f_v(u) q_r(a_v + u) du

f_w is the truncated-exponential density and q_r the optional observed share of
conversions at delay d (piecewise constant in the delay). The denominator
corrects for right truncation (a young click only shows its early delays) and for
delay-dependent observability (cookie caps); conditioning on being reported means
no click counts are needed. A MAP prior (Gamma on each rate 1/s_w, Dirichlet on pi)
keeps windows without information at the prior.

Hand-written because no well-kept library fits this model: survival libraries
handle censoring and left truncation of single parametric families, not a
right-truncated mixture of per-window truncated exponentials with an
observability weight. The model is closed-form; scipy.optimize (L-BFGS-B with the
analytic gradient) does the optimisation.
"""

import dataclasses
import json
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import optimize

from observation import delay as delay_lib
from schemas import columns

# Ages (hours) of the exposure table `DelayFit.to_json` writes for people.
TABLE_AGES_HOURS = (1.0, 6.0, 24.0, 48.0, 168.0, 720.0)
_LOG_SCALE_BOUNDS = (np.log(1e-3), np.log(1e7))
_LOGIT_BOUNDS = (-30.0, 30.0)


def _geometry(windows) -> Tuple[np.ndarray, np.ndarray]:
  start = np.array([w.start_hours for w in windows], dtype=np.float64)
  return start, np.array([w.end_hours for w in windows], np.float64) - start


def _softmax(logits):
  z = np.concatenate([[0.0], logits])  # logit 0 fixed: softmax is shift-free
  pi = np.exp(z - z.max())
  return pi / pi.sum()


def _trunc(t, s):
  """1 - exp(-t / s) and its derivative in log s."""
  return -np.expm1(-t / s), -(t / s) * np.exp(-t / s)


def _cdf(inside, length, scale):
  # Same operations as DelayModel.exposures, so a prior fit matches it exactly.
  return -np.expm1(-inside / scale) / -np.expm1(-length / scale)


@dataclasses.dataclass(frozen=True, eq=False)  # eq: arrays have no truth value
class DelayFit:
  """A measured (or configured) delay model per delay segment.

  Attributes:
    windows: the delay windows.
    shares: [n_segments, W] window shares (rows sum to 1).
    scales: [n_segments, W] truncated-exponential scales, hours.
    conversions: [n_segments] in-window conversions of each segment in the data
      (a segment in `pooled_only` informed only the pooled fit).
    pooled_only: segment ids that kept the pooled fit (too few conversions).
    source: 'fitted', or 'prior' when no conversion fell in a window.
    dropped: conversions outside every window (not used).
    pooled_shares, pooled_scales: [W] the pooled fit, used for segment ids
      outside [0, n_segments); default: row 0.
  """
  windows: Tuple[columns.Window, ...]
  shares: np.ndarray
  scales: np.ndarray
  conversions: np.ndarray
  pooled_only: Tuple[int, ...]
  source: str
  dropped: int
  pooled_shares: Optional[np.ndarray] = None
  pooled_scales: Optional[np.ndarray] = None

  def __post_init__(self):
    put = lambda name, value: object.__setattr__(self, name, value)
    put('windows', tuple(self.windows))
    for name in ('shares', 'scales'):
      put(name, np.atleast_2d(np.asarray(getattr(self, name), np.float64)))
    put('conversions', np.asarray(self.conversions, dtype=np.int64).reshape(-1))
    put('pooled_only', tuple(int(g) for g in self.pooled_only))
    put('dropped', int(self.dropped))
    for name in ('pooled_shares', 'pooled_scales'):
      value = getattr(self, name)
      value = getattr(self, name[7:])[0] if value is None else value
      put(name, np.array(value, dtype=np.float64).reshape(-1))
    shape = (len(self.conversions), len(self.windows))
    if self.shares.shape != shape or self.scales.shape != shape:
      raise ValueError(f'shares/scales must be {shape}, got {self.shares.shape} '
                       f'and {self.scales.shape}')

  def _params(self, n: int, segment) -> Tuple[np.ndarray, np.ndarray]:
    """[n, W] shares and scales per click: its segment's, else the pooled fit."""
    g = np.zeros(n, np.int64) if segment is None else np.broadcast_to(
        np.asarray(segment, dtype=np.int64), (n,))
    g = np.where((g >= 0) & (g < len(self.shares)), g, len(self.shares))
    return (np.vstack([self.shares, self.pooled_shares])[g],
            np.vstack([self.scales, self.pooled_scales])[g])

  def model(self, segment: int = 0) -> delay_lib.DelayModel:
    """The segment's DelayModel (the pooled one for an unknown segment)."""
    return delay_lib.DelayModel(self._params(1, segment)[1][0].tolist(),
                                self.windows)

  def exposures(self, age_hours, segment=None) -> np.ndarray:
    """[n, W] share of each window's conversions reported by `age_hours`.

    Args:
      age_hours: array-like [n] click ages at T, hours.
      segment: None (every click in segment 0), or int [n] (or a scalar) segment
        ids; ids outside [0, n_segments) use the pooled fit.
    """
    age = np.asarray(age_hours, dtype=np.float64).reshape(-1)
    scales = self._params(len(age), segment)[1]
    start, length = _geometry(self.windows)
    return _cdf(np.clip(age[:, None] - start, 0.0, length), length, scales)

  def maturity(self, age_hours, segment=None) -> np.ndarray:
    """[n] share of a click's conversions reported by `age_hours`."""
    age = np.asarray(age_hours, dtype=np.float64).reshape(-1)
    shares = self._params(len(age), segment)[0]
    return (shares * self.exposures(age, segment)).sum(axis=1)

  def to_json(self) -> str:
    """JSON of the fit, with exposures at TABLE_AGES_HOURS per segment for people."""
    ages = np.array(TABLE_AGES_HOURS)
    rounded = lambda a: np.round(a, 4).tolist()
    ids = list(range(len(self.shares))) + ([-1] if len(self.shares) > 1 else [])
    table = [{'segment': 'pooled' if g < 0 else g,
              'maturity': rounded(self.maturity(ages, g)),
              **dict(zip([w.name for w in self.windows],
                         rounded(self.exposures(ages, g).T)))} for g in ids]
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out = {k: v.tolist() if isinstance(v, np.ndarray) else v
           for k, v in out.items()}
    out['windows'] = [dataclasses.asdict(w) for w in self.windows]
    # One line per field and per segment of the table: readable, still JSON.
    lines = [f' {json.dumps(k)}: {json.dumps(v)}' for k, v in out.items()]
    lines.append(f' "exposure_table": {{"ages_hours": {list(TABLE_AGES_HOURS)}, '
                 '"segments": [\n  ' + ',\n  '.join(map(json.dumps, table)) + ']}')
    return '{\n' + ',\n'.join(lines) + '\n}'


  @classmethod
  def from_json(cls, text: str) -> 'DelayFit':
    d = json.loads(text)
    d.pop('exposure_table', None)  # derived, for people only
    d['windows'] = tuple(columns.Window(**w) for w in d['windows'])
    return cls(**d)

  @classmethod
  def from_prior(cls, windows, shares, scales, n_segments: int = 1) -> 'DelayFit':
    """Every segment (and the pooled fit) the configured model; source 'prior'."""
    shares, scales = _check_prior(windows, shares, scales)
    return cls(tuple(windows), np.tile(shares, (n_segments, 1)),
               np.tile(scales, (n_segments, 1)), np.zeros(n_segments),
               tuple(range(n_segments)), 'prior', 0, shares, scales)


def _check_prior(windows, shares, scales):
  windows = tuple(windows)
  if not windows or any(not isinstance(w, columns.Window) for w in windows):
    raise ValueError(f'windows must be a non-empty sequence of Window: {windows}')
  start, length = _geometry(windows)
  if (start < 0).any() or (length <= 0).any() or (
      start[1:] < start[:-1] + length[:-1]).any():
    raise ValueError(f'windows must be sorted, non-overlapping, start >= 0 and '
                     f'end > start: {windows}')
  shares = np.asarray(shares, dtype=np.float64)
  scales = np.asarray(scales, dtype=np.float64)
  if shares.shape != (len(windows),) or (shares < 0).any() or abs(
      shares.sum() - 1) > 1e-6:
    raise ValueError(f'prior_shares must be {len(windows)} shares >= 0 summing '
                     f'to 1, got {shares.tolist()}')
  if scales.shape != (len(windows),) or not (scales > 0).all():
    raise ValueError(f'prior_scales must be {len(windows)} scales > 0, got '
                     f'{scales.tolist()}')
  return shares, scales


class _Data:
  """One fit's sufficient statistics: per-window counts and delay sums, and the
  distinct (age, observability row) pairs of the normaliser, with weights."""

  def __init__(self, n, x_sum, u, idx, q, weight):
    self.n, self.x_sum = n, x_sum  # [W] conversions, sum of d - a_w
    self.u = u  # [m, W] min(A, b_v) - a_v, clipped to [0, b_v - a_v]
    self.idx, self.q = idx, q  # [m, W] base-table index, q_r at a_v + u (or None)
    self.weight = weight  # [m] conversions per distinct pair


def _objective(theta, data, length, cuts, table, prior_shares, prior_scales, k):
  """Negative log posterior / conversions and its gradient in (log s, logits)."""
  s, pi = np.exp(theta[:len(length)]), _softmax(theta[len(length):])
  e_u, de_u = _trunc(data.u, s)
  if data.idx is not None:
    # Integral of f_v q_r up to u, unnormalised: a table per (window, row,
    # piece) plus the open piece, base[v, r, k] + q[r, k] * E(u).
    base = []
    for val in _trunc(cuts, s[:, None]):
      piece = table[None] * np.diff(val, axis=1)[:, None, :]  # [W, R, K]
      cum = np.cumsum(piece, axis=2) - piece  # the pieces before piece k
      base.append((cum - table[None] * val[:, None, :-1]).ravel())
    e_u = base[0][data.idx] + data.q * e_u
    de_u = base[1][data.idx] + data.q * de_u
  mass, dmass = _trunc(length, s)
  g = e_u / mass
  dg = (de_u - g * dmass) / mass
  dens = np.maximum(g @ pi, 1e-300)  # 0 only for a zero-length age (A = d = a_w)
  wd = data.weight / dens
  total = data.weight.sum()
  c = data.n + k * prior_shares
  f = (-(c * np.log(pi)).sum() + (data.x_sum / s + data.n * np.log(s) +
       data.n * np.log(mass)).sum() + k * (np.log(s) + prior_scales / s).sum() +
       (data.weight * np.log(dens)).sum())
  grad_s = (-data.x_sum / s + data.n + data.n * dmass / mass +
            k * (1 - prior_scales / s) + pi * (wd @ dg))
  grad_z = -c + c.sum() * pi + pi * (wd @ g) - total * pi
  norm = max(total + k, 1.0)
  return f / norm, np.concatenate([grad_s, grad_z[1:]]) / norm


def _fit_one(data, length, cuts, table, prior_shares, prior_scales, k):
  theta = np.concatenate([np.log(prior_scales), np.clip(
      np.log(np.maximum(prior_shares[1:], 1e-12)) -
      np.log(max(prior_shares[0], 1e-12)), *_LOGIT_BOUNDS)])
  bounds = [_LOG_SCALE_BOUNDS] * len(length) + [_LOGIT_BOUNDS] * (len(length) - 1)
  res = optimize.minimize(
      _objective, theta, jac=True, method='L-BFGS-B', bounds=bounds,
      args=(data, length, cuts, table, prior_shares, prior_scales, k),
      options={'maxiter': 1000, 'ftol': 1e-13, 'gtol': 1e-8})
  return _softmax(res.x[len(length):]), np.exp(res.x[:len(length)])


def fit(delay_hours, age_hours, windows: Sequence[columns.Window],
        prior_shares, prior_scales, *, segment=None, n_segments: int = 1,
        observe_row=None, observe_edges=None, observe_table=None,
        prior_conversions: float = 20.0,
        min_segment_conversions: int = 500) -> DelayFit:
  """Fits window shares and scales per segment from reported conversions.

  Args:
    delay_hours: [n] delay of each conversion reported by T, hours (>= 0).
    age_hours: [n] age of its click at T, hours (>= delay).
    windows: the delay windows (sorted, non-overlapping).
    prior_shares, prior_scales: [W] the configured model, the pooled fit's prior.
    segment: int [n] delay segment of each conversion's click (default all 0).
    n_segments: number of segments (ids 0..n_segments-1).
    observe_row: int [n] row of `observe_table` per conversion; -1 (or no table):
      fully observed.
    observe_edges: [K + 1] increasing delay edges (hours) of the table's pieces;
      the outer pieces extend to 0 and infinity.
    observe_table: [R, K] observed share of conversions per row and delay piece.
    prior_conversions: strength of the priors in pseudo-conversions.
    min_segment_conversions: a segment with fewer in-window conversions keeps
      the pooled fit (listed in `pooled_only`).

  Returns:
    The DelayFit; the prior itself (source 'prior') if no conversion fell in a
    window.
  """
  windows = tuple(windows)
  prior_shares, prior_scales = _check_prior(windows, prior_shares, prior_scales)
  start, length = _geometry(windows)
  d = np.asarray(delay_hours, dtype=np.float64)
  age = np.asarray(age_hours, dtype=np.float64)
  if d.ndim != 1 or not np.isfinite(d).all() or (d < 0).any():
    raise ValueError('delay_hours must be a 1-D array of finite delays >= 0')
  if age.shape != d.shape or np.isnan(age).any() or (age < d).any():
    raise ValueError(f'age_hours must have shape {d.shape} and be >= delay_hours')
  if n_segments < 1:
    raise ValueError(f'n_segments must be >= 1, got {n_segments}')
  if prior_conversions < 0:
    raise ValueError(f'prior_conversions must be >= 0, got {prior_conversions}')
  if (observe_edges is None) != (observe_table is None):
    raise ValueError('observe_edges and observe_table go together')
  table = np.ones((0, 1)) if observe_table is None else np.asarray(
      observe_table, dtype=np.float64)
  edges = np.array([0.0, np.inf]) if observe_edges is None else np.asarray(
      observe_edges, dtype=np.float64)
  if table.ndim != 2 or not ((table >= 0) & (table <= 1)).all():
    raise ValueError('observe_table must be [rows, pieces] of shares in [0, 1]')
  if edges.shape != (table.shape[1] + 1,) or (np.diff(edges) <= 0).any():
    raise ValueError(f'observe_edges must be {table.shape[1] + 1} increasing '
                     'edges (one more than observe_table has columns)')
  seg = _ids(segment, 'segment', 0, n_segments, d.shape)
  # Rows index the table plus a last, fully observed row (-1, or no table).
  row = _ids(observe_row, 'observe_row', -1,
             2**62 if observe_table is None else len(table), d.shape)
  row = np.where((row < 0) | (observe_table is None), len(table), row)
  table = np.vstack([table, np.ones(table.shape[1])])

  win = np.searchsorted(start, d, side='right') - 1
  keep = (win >= 0) & (d < (start + length)[np.maximum(win, 0)])  # not in a gap
  dropped = int((~keep).sum())
  d, age, seg, row, win = d[keep], age[keep], seg[keep], row[keep], win[keep]
  if not len(d):
    return dataclasses.replace(DelayFit.from_prior(
        windows, prior_shares, prior_scales, n_segments), dropped=dropped)
  n_w = len(windows)
  cell = seg * n_w + win
  counts = np.bincount(cell, minlength=n_segments * n_w).reshape(-1, n_w)
  x_sums = np.bincount(cell, weights=d - start[win],
                       minlength=n_segments * n_w).reshape(-1, n_w)
  # The normaliser depends on a conversion only through (segment, row, age up to
  # the last window's end): sum over the distinct triples, weighted.
  age = np.minimum(age, start[-1] + length[-1])
  order = np.lexsort((age, row, seg))
  age, row, seg = age[order], row[order], seg[order]
  first = np.flatnonzero(np.concatenate([[True], (age[1:] != age[:-1]) | (
      row[1:] != row[:-1]) | (seg[1:] != seg[:-1])]))
  weight = np.diff(np.append(first, len(age))).astype(np.float64)
  age, row, seg = age[first], row[first], seg[first]
  u = np.clip(age[:, None] - start, 0.0, length)
  cuts = np.clip(np.concatenate([[-np.inf], edges[1:-1], [np.inf]])[None] -
                 start[:, None], 0.0, length[:, None])  # [W, K + 1]
  idx = q = None
  if table.shape != (1, 1):  # else q = 1 everywhere
    piece = np.searchsorted(edges[1:-1], start + u, side='right')
    idx = (np.arange(n_w) * len(table) + row[:, None]) * table.shape[1] + piece
    q = table[row[:, None], piece]

  def solve(mask, n, x_sum, shares, scales):
    data = _Data(n, x_sum, u[mask], None if idx is None else idx[mask],
                 None if q is None else q[mask], weight[mask])
    return _fit_one(data, length, cuts, table, shares, scales,
                    float(prior_conversions))

  pooled_shares, pooled_scales = solve(slice(None), counts.sum(0),
                                       x_sums.sum(0), prior_shares, prior_scales)
  shares = np.tile(pooled_shares, (n_segments, 1))
  scales = np.tile(pooled_scales, (n_segments, 1))
  pooled_only = []
  for g in range(n_segments if n_segments > 1 else 0):  # 1: the pooled fit
    if counts[g].sum() < min_segment_conversions:
      pooled_only.append(g)
    else:  # shrunk to the pooled fit
      shares[g], scales[g] = solve(seg == g, counts[g], x_sums[g],
                                   pooled_shares, pooled_scales)
  return DelayFit(windows, shares, scales, counts.sum(1),
                  tuple(pooled_only), 'fitted', dropped, pooled_shares,
                  pooled_scales)


def _ids(value, name, lo, hi, shape):
  """Validated int ids in [lo, hi) of `shape`; `lo` everywhere when None."""
  ids = np.full(shape, lo, np.int64) if value is None else np.asarray(value)
  if ids.shape != shape or (ids.size and (ids.dtype.kind not in 'iu' or (
      ids.min() < lo) or ids.max() >= hi)):
    raise ValueError(f'{name} must be ints in [{lo}, {hi}) of shape {shape}')
  return ids.astype(np.int64)
