"""The click-to-conversion delay distribution over a dataset's delay windows
(docs/architecture.md §3-4).

Inside window w = [a, b) the delay is a + Exp(scale_w) truncated to [0, b - a). The
model samples delays in the synthetic world and gives each window's exposure at T:
the share of the window's conversions expected to be reported by then. Which
scales the pipeline uses is measured on the logs (observation/delay_fit.py), with
the dataset spec's prior as the fallback.
"""

from typing import Sequence

import numpy as np

from schemas import columns


class DelayModel:
  """Per-window truncated-exponential delays."""

  def __init__(self, scale_hours: Sequence[float],
               windows: Sequence[columns.Window]):
    if len(scale_hours) != len(windows):
      raise ValueError(f'need {len(windows)} scales, got {len(scale_hours)}')
    if any(s <= 0 for s in scale_hours):
      raise ValueError(f'delay scales must be > 0, got {list(scale_hours)}')
    self.windows = tuple(windows)
    self.start = np.array([w.start_hours for w in windows])
    self.length = np.array([w.end_hours - w.start_hours for w in windows])
    self.scale = np.asarray(scale_hours, dtype=np.float64)
    # Normaliser of the truncated exponential: P(Exp(s) < length).
    self._mass = -np.expm1(-self.length / self.scale)

  def exposures(self, age_hours) -> np.ndarray:
    """Share of each window's conversions reported by `age_hours` after the click.

    Args:
      age_hours: array-like [n] of click ages at T, in hours (>= 0).

    Returns:
      float64 [n, n_windows]; 0 before a window opens, 1 once it has closed.
    """
    age = np.asarray(age_hours, dtype=np.float64)[:, None]
    inside = np.clip(age - self.start, 0.0, self.length)
    return -np.expm1(-inside / self.scale) / self._mass

  def sample(self, rng: np.random.Generator, window_index) -> np.ndarray:
    """Samples delays in hours for conversions in the given windows (inverse CDF)."""
    w = np.asarray(window_index)
    u = rng.random(w.shape)
    offset = -self.scale[w] * np.log1p(-u * self._mass[w])
    # Guard the float edge: a delay never reaches the window's end.
    return self.start[w] + np.minimum(offset, np.nextafter(self.length[w], 0))

  def window_of(self, delay_hours) -> np.ndarray:
    """Index of the window containing each delay; -1 if in none."""
    return window_of(self.windows, delay_hours)


def window_of(windows: Sequence[columns.Window], delay_hours) -> np.ndarray:
  """Index of the window containing each delay; -1 if in none (before the first,
  in a gap, or after the last)."""
  d = np.asarray(delay_hours, dtype=np.float64)
  out = np.full(d.shape, -1, dtype=np.int64)
  for i, w in enumerate(windows):
    out[(d >= w.start_hours) & (d < w.end_hours)] = i
  return out
