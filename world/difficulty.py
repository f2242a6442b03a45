"""How hard the world is: the best Poisson GLM against the Bayes floor.

Targets are the true total conversions (every conversion, observed or not), so the
numbers describe the world, not the observation process: the gap of the best GLM on
serving features above the floor (non-linearity plus privileged signal), and the
share of that gap that adding the teacher-only features closes.
"""

from typing import Dict, Mapping

import numpy as np

from config.dataset import DatasetSpec
from models import glm as glm_lib
from models import nll
from schemas import columns


def measure(clicks: Mapping[str, np.ndarray], dataset: DatasetSpec,
            seed: int = 0) -> Dict[str, float]:
  """NLLs on a held-out third of the clicks (GLM penalty picked on another third).

  Args:
    clicks: click-log columns, truth included.
    dataset: the synthetic dataset's spec (its features).
    seed: the split's seed.

  Returns:
    floor, constant, glm_serving, glm_with_teacher_only (mean NLL per click),
    glm_gap (glm_serving / floor - 1) and privileged_share (the share of that gap
    the teacher-only features close).
  """
  y = np.asarray(clicks[columns.TRUE_CONVERSIONS], dtype=np.float64)
  rate = sum(np.asarray(clicks[n], dtype=np.float64)
             for n in columns.true_rates(dataset.window_names()))
  part = np.random.default_rng(seed).integers(0, 3, len(y))
  fit, valid, test = part == 0, part == 1, part == 2

  def rows(mask):
    return {k: np.asarray(v)[mask] for k, v in clicks.items()}

  out = {
      'floor': nll.poisson_nll(y[test], rate[test]),
      'constant': nll.poisson_nll(y[test], np.full(test.sum(), y[fit].mean())),
      'test_clicks': float(test.sum()),
  }
  for name, feats in [
      ('glm_serving', dataset.serving_features()),
      ('glm_with_teacher_only', dataset.teacher_features())]:
    glm = glm_lib.best_glm(rows(fit), y[fit], rows(valid), y[valid], feats)
    out[name] = nll.poisson_nll(y[test], glm.predict(rows(test)))
  out['glm_gap'] = out['glm_serving'] / out['floor'] - 1
  out['privileged_share'] = (out['glm_serving'] - out['glm_with_teacher_only']) / (
      out['glm_serving'] - out['floor'])
  return out
