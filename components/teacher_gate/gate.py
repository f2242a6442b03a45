"""The teacher's bar, as pure functions over predictions and labels.

Synthetic data (truth columns present): the teacher must close at least
`min_gap_closed` of the gap between the best constant rate and the Bayes floor, on
the true total conversions of the eval split:
    gap_closed = (NLL_constant - NLL_teacher) / (NLL_constant - NLL_floor).
Real logs (no truth): the exact thinned likelihood of the reported per-window
counts, teacher vs the best per-window constant rates under the same offsets; the
teacher must improve on it by at least `min_improvement` (relative).

Synthetic data also bounds the teacher's calibration per delay window: on eval,
    calibration_w = sum(predicted rate_w) / sum(true rate_w)
must lie within 1 +- tolerance_w for every window, where
    tolerance_w = calibration_band + 2 / sqrt(n_w)
and n_w is the number of reported conversions of window w the teacher was fit to:
a head fit to n_w counts matches them, and their Poisson noise moves its
calibration by about 1 / sqrt(n_w) (measured: a 400-step teacher on 30k clicks
saw 39 conversions in 7-90 d, matched them to 3%, and was 0.84 calibrated
against the truth). Without the counts the tolerance is the band alone; a band of
0 disables the check.

Real logs have no truth; where they carry a measurement panel (clicks whose
conversions are all observed) the teacher's calibration per window is checked on
the panel's eval clicks instead:
    panel_calibration_w = sum(e_w * rate_w) / sum(reported_w)   (panel clicks)
against 1 +- (calibration_band + 2 sqrt(1/m_w + 1/n_w)), m_w the panel's reported
conversions of window w (their own Poisson noise). A window with no panel
conversion is not checked, and the verdict says so; without a panel the band is
recorded as not checked.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np

from config import TeacherGateConfig
from models import nll

CALIBRATION_TOTAL = 'calibration_total'
# Standard errors of label noise the calibration tolerance admits on top of the band.
NOISE_Z = 2.0


def calibration_key(window: str) -> str:
  """The metric (and GateResult property) name of a window's calibration."""
  return f'calibration_{window}'


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


def truth_calibration(rates: np.ndarray, true_rates: np.ndarray,
                      window_names: Sequence[str]) -> Dict[str, float]:
  """Calibration per delay window against the true rates.

  Args:
    rates: [n, windows] the teacher's rate per window.
    true_rates: [n, windows] the true rates (true_rate_<w>), same window order.
    window_names: the dataset's delay windows.

  Returns:
    calibration_<window> = sum(rates_w) / sum(true_rates_w) for each window,
    and calibration_total over all windows; inf (or nan) where a window's true
    rates sum to 0.
  """
  rates = np.asarray(rates, dtype=np.float64)
  true_rates = np.asarray(true_rates, dtype=np.float64)
  shape = (rates.shape[0], len(window_names))
  if rates.shape != shape or true_rates.shape != shape:
    raise ValueError(f'expected [n, {shape[1]}] rates and true rates (windows '
                     f'{list(window_names)}), got {rates.shape} and '
                     f'{true_rates.shape}')
  with np.errstate(divide='ignore', invalid='ignore'):
    per_window = rates.sum(0) / true_rates.sum(0)
    total = rates.sum() / true_rates.sum()
  m = {calibration_key(w): float(c)
       for w, c in zip(window_names, per_window)}
  m[CALIBRATION_TOTAL] = float(total)
  return m


def conversions_key(window: str) -> str:
  """The metric name of the reported conversions a window's head was fit to."""
  return f'trained_conversions_{window}'


def tolerance(metrics: Dict[str, float], window: str, band: float) -> float:
  """The calibration tolerance of `window`: the band plus its label noise."""
  n = metrics.get(conversions_key(window))
  if n is None:
    return band
  return band + NOISE_Z / np.sqrt(max(n, 1.0))


def panel_key(window: str) -> str:
  """The metric name of a window's calibration on the panel (observed mode)."""
  return f'panel_calibration_{window}'


def panel_conversions_key(window: str) -> str:
  return f'panel_conversions_{window}'


def calibration_checked(mode: str, bar: TeacherGateConfig,
                        metrics: Dict[str, float],
                        window_names: Sequence[str]) -> bool:
  """Whether `decide` holds the per-window calibration to the band: truth mode,
  or observed mode on a panel with conversions in some window."""
  if bar.calibration_band <= 0:
    return False
  if mode == 'truth':
    return True
  return any((metrics or {}).get(panel_conversions_key(w), 0) > 0
             for w in window_names)


def panel_calibration(counts: np.ndarray, exposures: np.ndarray, rates: np.ndarray,
                      in_panel: np.ndarray,
                      window_names: Sequence[str]) -> Dict[str, float]:
  """Per window on the panel: panel_calibration_<w> (nan without a conversion)
  and panel_conversions_<w>.

  Args:
    counts, exposures, rates: [n, windows] reported counts, exposures e_w and the
      teacher's rates.
    in_panel: [n] 1 for a panel click.
  """
  panel = np.asarray(in_panel).reshape(-1) == 1
  y = np.asarray(counts, np.float64)[panel].sum(0)
  mu = (np.asarray(exposures, np.float64) * np.asarray(rates, np.float64))[panel].sum(0)
  out = {}
  for i, w in enumerate(window_names):
    out[panel_key(w)] = float(mu[i] / y[i]) if y[i] > 0 else float('nan')
    out[panel_conversions_key(w)] = float(y[i])
  return out


def _panel_clause(metrics: Dict[str, float], bar: TeacherGateConfig,
                  window_names: Sequence[str]) -> Tuple[str, List[str]]:
  """The observed-mode calibration clause (on the panel) and the problems found."""
  checked = [w for w in window_names
             if metrics.get(panel_conversions_key(w), 0) > 0]
  if not checked:
    return ('per-window calibration not checked (no truth in observed mode and no '
            'panel conversion)'), []
  band = bar.calibration_band
  parts, problems = [], []
  for w in checked:
    m = metrics[panel_conversions_key(w)]
    n = metrics.get(conversions_key(w))
    tol = band + NOISE_Z * np.sqrt(1.0 / m + (1.0 / max(n, 1.0) if n else 0.0))
    cal = metrics[panel_key(w)]
    parts.append(f'{w} {cal:.3f} +-{tol:.3f} ({m:.0f} panel conversions)')
    if band > 0 and not abs(cal - 1.0) <= tol:
      problems.append(f'window {w} calibration on the panel {cal:.3f} is outside '
                      f'1 +- {tol:.3f}')
  text = 'calibration on the panel per window ' + ', '.join(parts)
  if band <= 0:
    text += ' (not checked: calibration_band 0)'
  unchecked = [w for w in window_names if w not in checked]
  if unchecked:
    text += f'; {", ".join(unchecked)} not checked (no panel conversion)'
  return text, problems


def _calibration(metrics: Dict[str, float], bar: TeacherGateConfig,
                 window_names: Sequence[str]) -> Tuple[str, List[str]]:
  """The truth-mode calibration clause of the verdict and the problems found."""
  band = bar.calibration_band
  keys = [calibration_key(w) for w in window_names] + [CALIBRATION_TOTAL]
  missing = [k for k in keys if k not in metrics]
  if missing and band > 0:
    # A caller bug, not a bad teacher: an unmeasured band must not pass.
    raise ValueError(f'calibration_band {band} needs {missing} in the metrics '
                     '(gate.truth_calibration)')
  if missing:
    return 'per-window calibration not checked (calibration_band 0)', []
  figures = ', '.join(f'{w} {metrics[calibration_key(w)]:.3f}'
                      for w in window_names)
  text = (f'calibration (predicted / true rate) per window {figures}, total '
          f'{metrics[CALIBRATION_TOTAL]:.3f}')
  if band <= 0:
    return text + ' (not checked: calibration_band 0)', []
  tol = {w: tolerance(metrics, w, band) for w in window_names}

  def why(w):
    n = metrics.get(conversions_key(w))
    return (f'calibration_band {band:g}' if n is None else
            f'calibration_band {band:g} + {NOISE_Z:g}/sqrt({n:.0f} reported '
            'conversions trained on)')
  # `not ... <= ...` also catches nan.
  problems = [f'window {w} calibration {metrics[calibration_key(w)]:.3f} is '
              f'outside 1 +- {tol[w]:.3f} ({why(w)})'
              for w in window_names
              if not abs(metrics[calibration_key(w)] - 1.0) <= tol[w]]
  return text + '; tolerances ' + ', '.join(
      f'{w} +-{tol[w]:.3f}' for w in window_names), problems


def observed_metrics(counts: np.ndarray, offsets: np.ndarray,
                     rates: np.ndarray) -> Dict[str, float]:
  """Thinned NLL per example (summed over windows): teacher vs constant rates.

  Args:
    counts, offsets, rates: [n, windows]; offsets are the observed exposures
      o_w, rates the teacher's total rate per window.
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


def decide(mode: str, metrics: Dict[str, float], bar: TeacherGateConfig,
           window_names: Sequence[str]) -> str:
  """The verdict's explanation; raises TeacherGateError when the teacher fails.

  Truth mode fails below `min_gap_closed` or, with a `calibration_band`, when any
  window's calibration (metrics from `truth_calibration`) is outside the band;
  the error names each such window.
  """
  problems = []
  if mode == 'truth':
    ok = metrics['gap_closed'] >= bar.min_gap_closed
    text = (f"teacher eval NLL {metrics['teacher_nll']:.5f} closes "
            f"{metrics['gap_closed']:.1%} of the gap between the constant rate "
            f"({metrics['constant_nll']:.5f}) and the Bayes floor "
            f"({metrics['floor_nll']:.5f}); the bar is {bar.min_gap_closed:.0%}")
    calibration, problems = _calibration(metrics, bar, window_names)
    text += '; ' + calibration
  elif mode == 'observed':
    ok = metrics['improvement'] >= bar.min_improvement
    text = (f"teacher thinned eval NLL {metrics['teacher_nll']:.5f} improves on "
            f"constant rates ({metrics['constant_nll']:.5f}) by "
            f"{metrics['improvement']:.2%}; the bar is {bar.min_improvement:.2%}")
    calibration, problems = _panel_clause(metrics, bar, window_names)
    text += '; ' + calibration
  else:
    raise ValueError(f'unknown teacher gate mode {mode!r}')
  if not ok or problems:
    raise TeacherGateError('TeacherGate: the teacher is not good enough, stopping '
                           'before it distils into the student: ' +
                           ''.join(p + '; ' for p in problems) + text)
  return text
