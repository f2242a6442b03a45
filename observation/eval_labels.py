"""What a model's pConvs is scored against (docs/architecture.md §7).

Shared by the Quantizer's report, the Evaluator's PoissonLogLoss and the benchmark.

  truth:               the true total conversions (synthetic data only);
                       mu = pConvs.
  panel:               on measurement-panel clicks only (in_panel = 1, whose
                       conversions are all observed), the reported conversions
                       summed over windows; mu = pConvs * sum_w pi_w e_w (pi_w: the
                       configured average window shares; exactly pConvs once the
                       click is mature). Unbiased for the total whatever hides
                       conversions elsewhere (consent, cookie caps, tag coverage):
                       the real-log mode to gate on when logs carry a panel.
  observed_observable: on fully observed browsers only (f_b >= full_threshold),
                       the reported conversions summed over windows, with the
                       same mu. Unbiased only where observability is a per-browser
                       constant: where consent or tag coverage also hide
                       conversions of those browsers (the observability world,
                       docs/observability-world.md), it under-counts the truth;
                       tests/test_label_modes.py measures by how much.
  observed_modeled:    every click, reported plus modeled conversions
                       (e_w - o_w) t_w from the teacher's rates (o_w the
                       observed exposure); mu = pConvs * sum_w pi_w e_w. Covers
                       every browser but inherits the teacher's bias, and is
                       circular for a student distilled from that teacher: a
                       diagnostic, never a gate.
The modes score one pConvs output, so the split over windows comes from the
average shares pi_w: per click the expected label is sum_w e_w rate_w, which
those shares match only on average; per-window scores with exposure offsets need
the window rates, which the float student's serving signature has (the benchmark
and the TeacherGate compute them there), not the TFLite model TFMA runs.
On real logs (no truth) the others are reported beside the gating one.
"""

import dataclasses
import json
from typing import Mapping, Sequence, Tuple

import numpy as np

from schemas import columns

MODES = ('truth', 'panel', 'observed_observable', 'observed_modeled')


@dataclasses.dataclass(frozen=True)
class EvalLabelSpec:
  """A label mode and what it needs: the average window shares (to scale
  immature predictions) and the observability threshold of 'fully observed'.

  The Quantizer's `eval_label` parameter is its JSON; the PoissonLogLoss metric
  takes the same fields as keyword arguments (models/poisson_metric.py).
  """
  mode: str = 'truth'
  window_shares: Tuple[float, ...] = (1.0, 0.0, 0.0)
  full_threshold: float = 0.95

  def to_json(self) -> str:
    return json.dumps({'mode': self.mode, 'window_shares': list(self.window_shares),
                       'full_threshold': self.full_threshold}, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'EvalLabelSpec':
    d = json.loads(text)
    return cls(mode=d['mode'], window_shares=tuple(d['window_shares']),
               full_threshold=d['full_threshold'])

  def label_and_scale(self, rows: Mapping[str, np.ndarray]
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`label_and_scale` in this spec's (resolved) mode."""
    return label_and_scale(rows, self.mode, self.window_shares, self.full_threshold)


def resolve(mode: str, available: Sequence[str]) -> str:
  """'auto' -> truth when the truth columns are there, else observed_observable."""
  if mode == 'auto':
    return 'truth' if columns.TRUE_CONVERSIONS in available else 'observed_observable'
  if mode not in MODES:
    raise ValueError(f'unknown eval label mode {mode!r}; expected auto or one of {MODES}')
  needed = {'truth': [columns.TRUE_CONVERSIONS],
            'panel': list(columns.LABELS + columns.EXPOSURES) + [columns.IN_PANEL],
            'observed_observable': list(columns.LABELS + columns.EXPOSURES),
            'observed_modeled': list(columns.LABELS + columns.EXPOSURES +
                                     columns.OBSERVED_EXPOSURES +
                                     columns.TEACHER_RATES)}[mode]
  missing = [c for c in needed if c not in available]
  if missing:
    raise ValueError(f'eval label mode {mode!r} needs columns {missing}')
  return mode


def label_and_scale(rows: Mapping[str, np.ndarray], mode: str,
                    window_shares: Sequence[float], full_threshold: float = 0.95
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(label, prediction scale, keep) per example for `mode` (already resolved).

  The scored NLL is nll(label[keep], scale[keep] * pConvs[keep]).
  """
  n = len(rows[columns.CLICK_ID]) if columns.CLICK_ID in rows else len(
      next(iter(rows.values())))
  if mode == 'truth':
    return (np.asarray(rows[columns.TRUE_CONVERSIONS], np.float64).reshape(-1),
            np.ones(n), np.ones(n, bool))
  exposures = np.stack([np.asarray(rows[c], np.float64).reshape(-1)
                        for c in columns.EXPOSURES], 1)
  scale = exposures @ np.asarray(window_shares, np.float64)
  observed = np.stack([np.asarray(rows[c], np.float64).reshape(-1)
                       for c in columns.LABELS], 1)
  if mode == 'panel':
    panel = np.asarray(rows[columns.IN_PANEL]).reshape(-1) == 1
    return observed.sum(1), scale, panel & (scale > 0)
  if mode == 'observed_observable':
    fraction = np.asarray(rows[columns.OBSERVED_FRACTION], np.float64).reshape(-1)
    return observed.sum(1), scale, (fraction >= full_threshold) & (scale > 0)
  if mode == 'observed_modeled':
    teacher = np.stack([np.asarray(rows[c], np.float64).reshape(-1)
                        for c in columns.TEACHER_RATES], 1)
    observed_exposures = np.stack([np.asarray(rows[c], np.float64).reshape(-1)
                                   for c in columns.OBSERVED_EXPOSURES], 1)
    modeled = (np.maximum(exposures - observed_exposures, 0.0) * teacher).sum(1)
    return observed.sum(1) + modeled, scale, scale > 0
  raise ValueError(f'unknown eval label mode {mode!r}')
