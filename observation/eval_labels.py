"""What a model's pConvs is scored against (docs/architecture.md §7).

Shared by the Quantizer's report, the Evaluator's PoissonLogLoss and the benchmark.

  truth:               the true total conversions (synthetic data only);
                       mu = pConvs.
  panel:               on measurement-panel clicks only (the dataset's panel
                       column = 1: their conversions are all observed), the
                       reported conversions summed over windows; mu = pConvs *
                       maturity (maturity = sum_w pi_w e_w with the delay model's
                       window shares pi_w, written by the ExampleGen; exactly
                       pConvs once the click is mature). Unbiased for the total whatever hides
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
delay model's shares pi_w: per click the expected label is sum_w e_w rate_w, which
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
  """A label mode and what it needs: the delay windows (the label and exposure
  columns' names), the panel column ('' : none) and the observability
  threshold of 'fully observed'.

  The Quantizer's `eval_label` parameter is its JSON; the PoissonLogLoss metric
  takes the same fields as keyword arguments (models/poisson_metric.py).
  """
  mode: str = 'truth'
  window_names: Tuple[str, ...] = ()
  panel: str = ''
  full_threshold: float = 0.95

  def to_json(self) -> str:
    return json.dumps({'mode': self.mode, 'window_names': list(self.window_names),
                       'panel': self.panel, 'full_threshold': self.full_threshold},
                      sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'EvalLabelSpec':
    d = json.loads(text)
    return cls(mode=d['mode'], window_names=tuple(d['window_names']),
               panel=d['panel'], full_threshold=d['full_threshold'])

  def columns(self) -> Tuple[str, ...]:
    """The example columns this mode reads (besides the prediction)."""
    return needed(self.mode, self.window_names, self.panel)

  def label_and_scale(self, rows: Mapping[str, np.ndarray]
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`label_and_scale` in this spec's mode."""
    return label_and_scale(rows, self.mode, self.window_names, self.panel,
                           self.full_threshold)


def needed(mode: str, window_names: Sequence[str], panel: str = '') -> Tuple[str, ...]:
  """The columns label mode `mode` reads."""
  w = window_names
  if mode == 'truth':
    return (columns.TRUE_CONVERSIONS,)
  out = columns.labels(w) + (columns.MATURITY,)
  if mode == 'panel':
    return out + ((panel,) if panel else ())
  if mode == 'observed_observable':
    return out + (columns.OBSERVED_FRACTION,)
  if mode == 'observed_modeled':
    return out + columns.exposures(w) + columns.observed_exposures(w) + (
        columns.teacher_rates(w))
  raise ValueError(f'unknown eval label mode {mode!r}; one of {MODES}')


def resolve(mode: str, available: Sequence[str], window_names: Sequence[str],
            panel: str = '') -> str:
  """'auto' -> truth when the truth columns are there, else observed_observable;
  any mode: checked against the columns `available`."""
  if mode == 'auto':
    return 'truth' if columns.TRUE_CONVERSIONS in available else 'observed_observable'
  if mode not in MODES:
    raise ValueError(f'unknown eval label mode {mode!r}; expected auto or one of {MODES}')
  if mode == 'panel' and not panel:
    raise ValueError('eval label mode panel needs a panel column (the dataset spec '
                     'has none)')
  missing = [c for c in needed(mode, window_names, panel) if c not in available]
  if missing:
    raise ValueError(f'eval label mode {mode!r} needs columns {missing}')
  return mode


def label_and_scale(rows: Mapping[str, np.ndarray], mode: str,
                    window_names: Sequence[str], panel: str = '',
                    full_threshold: float = 0.95
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(label, prediction scale, keep) per example for `mode`.

  The scored NLL is nll(label[keep], scale[keep] * pConvs[keep]).
  """
  n = len(rows[columns.CLICK_ID]) if columns.CLICK_ID in rows else len(
      next(iter(rows.values())))
  if mode == 'truth':
    return (np.asarray(rows[columns.TRUE_CONVERSIONS], np.float64).reshape(-1),
            np.ones(n), np.ones(n, bool))

  def stack(names):
    return np.stack([np.asarray(rows[c], np.float64).reshape(-1) for c in names], 1)
  scale = np.asarray(rows[columns.MATURITY], np.float64).reshape(-1)
  observed = stack(columns.labels(window_names))
  if mode == 'panel':
    if not panel:
      raise ValueError('eval label mode panel needs a panel column (the dataset '
                       'spec has none)')
    in_panel = np.asarray(rows[panel]).reshape(-1) == 1
    return observed.sum(1), scale, in_panel & (scale > 0)
  if mode == 'observed_observable':
    fraction = np.asarray(rows[columns.OBSERVED_FRACTION], np.float64).reshape(-1)
    return observed.sum(1), scale, (fraction >= full_threshold) & (scale > 0)
  if mode == 'observed_modeled':
    exposures = stack(columns.exposures(window_names))
    teacher = stack(columns.teacher_rates(window_names))
    observed_exposures = stack(columns.observed_exposures(window_names))
    modeled = (np.maximum(exposures - observed_exposures, 0.0) * teacher).sum(1)
    return observed.sum(1) + modeled, scale, scale > 0
  raise ValueError(f'unknown eval label mode {mode!r}')
