"""The teacher's bar, as pure functions over predictions and labels.

Synthetic data (truth columns present): the teacher must close at least
`min_gap_closed` of the gap between the best constant rate and the Bayes floor, on
the true total conversions of the eval split:
    gap_closed = (NLL_constant - NLL_teacher) / (NLL_constant - NLL_floor).
Real logs (no truth): the exact thinned likelihood of the reported per-window
counts, teacher vs the best per-window constant rates under the same offsets; the
teacher must improve on it by at least `min_improvement` (relative).
"""

from typing import Dict

import numpy as np

from config import TeacherGateConfig
from models import nll


class TeacherGateError(RuntimeError):
  """The teacher failed its bar; the message gives the numbers."""


def truth_metrics(y_true: np.ndarray, pconvs: np.ndarray,
                  true_rate: np.ndarray) -> Dict[str, float]:
  """NLLs against the true totals: teacher, Bayes floor, best constant."""
  y = np.asarray(y_true, dtype=np.float64)
  m = {
      'teacher_nll': nll.poisson_nll(y, pconvs),
      'floor_nll': nll.poisson_nll(y, true_rate),
      'constant_nll': nll.poisson_nll(y, np.full(len(y), y.mean())),
  }
  m['gap_closed'] = (m['constant_nll'] - m['teacher_nll']) / (
      m['constant_nll'] - m['floor_nll'])
  return m


def observed_metrics(counts: np.ndarray, offsets: np.ndarray,
                     rates: np.ndarray) -> Dict[str, float]:
  """Thinned NLL per example (summed over windows): teacher vs constant rates.

  Args:
    counts, offsets, rates: [n, windows]; offsets are f_b * e_w, rates the
      teacher's total rate per window.
  """
  counts = np.asarray(counts, dtype=np.float64)
  offsets = np.asarray(offsets, dtype=np.float64)
  constant = counts.sum(0) / np.maximum(offsets.sum(0), 1e-12)  # MLE per window
  n = counts.shape[0]

  def total(mu):
    return float(nll.poisson_nll_per_example(counts.ravel(), mu.ravel()).sum() / n)
  m = {'teacher_nll': total(offsets * rates),
       'constant_nll': total(offsets * constant[None, :])}
  m['improvement'] = 1.0 - m['teacher_nll'] / m['constant_nll']
  return m


def decide(mode: str, metrics: Dict[str, float], bar: TeacherGateConfig) -> str:
  """The verdict's explanation; raises TeacherGateError when the teacher fails."""
  if mode == 'truth':
    ok = metrics['gap_closed'] >= bar.min_gap_closed
    text = (f"teacher eval NLL {metrics['teacher_nll']:.5f} closes "
            f"{metrics['gap_closed']:.1%} of the gap between the constant rate "
            f"({metrics['constant_nll']:.5f}) and the Bayes floor "
            f"({metrics['floor_nll']:.5f}); the bar is {bar.min_gap_closed:.0%}")
  elif mode == 'observed':
    ok = metrics['improvement'] >= bar.min_improvement
    text = (f"teacher thinned eval NLL {metrics['teacher_nll']:.5f} improves on "
            f"constant rates ({metrics['constant_nll']:.5f}) by "
            f"{metrics['improvement']:.2%}; the bar is {bar.min_improvement:.2%}")
  else:
    raise ValueError(f'unknown teacher gate mode {mode!r}')
  if not ok:
    raise TeacherGateError('TeacherGate: the teacher is not good enough, stopping '
                           'before it distils into the student: ' + text)
  return text
