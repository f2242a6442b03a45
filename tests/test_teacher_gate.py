"""The teacher's bar on hand-made predictions."""

import numpy as np
import pytest

from components.teacher_gate import gate
from config import TeacherGateConfig


def test_truth_mode_gap_closed():
  rng = np.random.default_rng(0)
  rate = rng.gamma(0.5, 0.2, 50_000)
  y = rng.poisson(rate)
  perfect = gate.truth_metrics(y, rate, rate)
  assert perfect['gap_closed'] == pytest.approx(1.0)
  const = gate.truth_metrics(y, np.full(len(y), y.mean()), rate)
  assert const['gap_closed'] == pytest.approx(0.0)
  half = gate.truth_metrics(y, np.sqrt(rate * y.mean()), rate)
  assert 0.2 < half['gap_closed'] < 0.95
  bar = TeacherGateConfig(min_gap_closed=0.5)
  assert 'closes 100.0%' in gate.decide('truth', perfect, bar)
  with pytest.raises(gate.TeacherGateError, match='closes 0.0% .* bar is 50%'):
    gate.decide('truth', const, bar)


def test_observed_mode_uses_offsets():
  rng = np.random.default_rng(1)
  rate = rng.gamma(0.5, 0.05, (40_000, 3))
  offsets = rng.uniform(0.1, 1.0, (40_000, 3))
  counts = rng.poisson(offsets * rate)
  good = gate.observed_metrics(counts, offsets, rate)
  assert good['improvement'] > 0.02
  flat = gate.observed_metrics(counts, offsets, np.ones_like(rate) * rate.mean(0))
  assert abs(flat['improvement']) < 0.01
  with pytest.raises(gate.TeacherGateError, match='improves on constant'):
    gate.decide('observed', flat, TeacherGateConfig(min_improvement=0.02))
