"""The student's loss against hand-computed values (models/distill.py)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from models import distill
from models import losses

W = 3


def batch(mask, tcpa=None, seed=0, n=None, hint_width=4):
  rng = np.random.default_rng(seed)
  n = n or len(mask)
  f = rng.choice([1.0, 0.3], (n, 1)).astype(np.float32)
  e = rng.uniform(0.2, 1.0, (n, W)).astype(np.float32)
  targets = {
      losses.COUNTS: rng.poisson(0.3, (n, W)).astype(np.float32),
      losses.EXPOSURES: e,
      losses.OBSERVED_FRACTION: f,
      distill.TEACHER_RATES: rng.gamma(1.0, 0.2, (n, W)).astype(np.float32),
      distill.TEACHER_HINT: rng.normal(size=(n, hint_width)).astype(np.float32),
      distill.TEACHER_MASK: np.asarray(mask, np.float32).reshape(n, 1),
      distill.TCPA: (np.asarray(tcpa, np.float32) if tcpa is not None
                     else rng.uniform(10, 400, n).astype(np.float32)).reshape(n, 1),
  }
  outputs = {
      distill.LOG_RATES: np.log(rng.gamma(1.0, 0.2, (n, W))).astype(np.float32),
      distill.AUX_LOG_RATES: np.log(rng.gamma(1.0, 0.2, (n, W))).astype(np.float32),
      distill.HINT_PROJECTION: rng.normal(size=(n, hint_width)).astype(np.float32),
  }
  return targets, outputs


def nll(y, mu):
  return mu - (y * math.log(mu) if y else 0.0) + math.lgamma(y + 1)


def reference(targets, outputs, w: distill.DistillWeights):
  """The module docstring's formula, one example at a time in plain Python."""
  n = len(targets[distill.TEACHER_MASK])
  hard = soft = aux = hint = 0.0
  m_total = 0.0
  for i in range(n):
    f = float(targets[losses.OBSERVED_FRACTION][i, 0])
    m = float(targets[distill.TEACHER_MASK][i, 0])
    v = (float(targets[distill.TCPA][i, 0]) / w.tcpa_reference)**w.tcpa_beta
    m_total += m
    for k in range(W):
      y = float(targets[losses.COUNTS][i, k])
      e = float(targets[losses.EXPOSURES][i, k])
      s = float(outputs[distill.LOG_RATES][i, k])
      t = float(targets[distill.TEACHER_RATES][i, k])
      a = float(outputs[distill.AUX_LOG_RATES][i, k])
      o = f * e if w.hard_observability else e
      hard += nll(y, o * math.exp(s))
      lt, ls = math.exp(math.log(t) / w.temperature), math.exp(s / w.temperature)
      soft += m * v * w.temperature**2 * (lt * math.log(lt / ls) - lt + ls)
      target = y + (1 - f) * e * t
      aux += m * v * (e * math.exp(a) - target * (math.log(e) + a) + math.lgamma(target + 1))
    diff = targets[distill.TEACHER_HINT][i] - outputs[distill.HINT_PROJECTION][i]
    hint += m * v * 0.5 * float(np.sum(diff.astype(np.float64)**2))
  d = max(1.0, m_total)
  terms = {'hard': hard / n, 'soft': soft / d, 'aux': aux / d, 'hint': hint / d}
  terms['loss'] = ((1 - w.alpha) * terms['hard'] + w.alpha * terms['soft'] +
                   w.aux_weight * terms['aux'] + w.hint_weight * terms['hint'])
  return terms


def compute(targets, outputs, w):
  got = distill.student_loss({k: tf.constant(v) for k, v in targets.items()},
                             {k: tf.constant(v) for k, v in outputs.items()}, w)
  return {k: float(v) for k, v in got.items()}


FULL = distill.DistillWeights(alpha=0.4, temperature=2.0, aux_weight=0.3,
                              hint_weight=0.1, tcpa_beta=0.5, tcpa_reference=60.0)


@pytest.mark.parametrize('w', [
    FULL,
    distill.DistillWeights(alpha=0.7, temperature=1.0, aux_weight=1.0),
    distill.DistillWeights(hard_observability=False, alpha=0.2, hint_weight=1.0),
])
def test_matches_the_hand_computed_formula(w):
  targets, outputs = batch([1, 0, 1, 1, 0, 1])
  got, want = compute(targets, outputs, w), reference(targets, outputs, w)
  for name in ('loss', 'hard', 'soft', 'aux', 'hint'):
    coef = {'soft': w.alpha, 'aux': w.aux_weight, 'hint': w.hint_weight}.get(name, 1)
    if coef:
      assert got[name] == pytest.approx(want[name], rel=1e-4, abs=1e-6), name
  assert got['teacher_examples'] == 4


def test_masked_terms_contribute_exactly_zero():
  targets, outputs = batch([1, 0, 1, 0])
  base = compute(targets, outputs, FULL)
  # Garbage (even non-finite) teacher columns on masked examples change nothing.
  for key in (distill.TEACHER_RATES, distill.TEACHER_HINT):
    targets[key][[1, 3]] = np.nan
  assert compute(targets, outputs, FULL) == base
  # Everything masked: only the hard term is left.
  targets, outputs = batch([0, 0, 0, 0])
  got = compute(targets, outputs, FULL)
  assert got['soft'] == got['aux'] == got['hint'] == 0.0
  assert got['loss'] == pytest.approx((1 - FULL.alpha) * got['hard'])


def test_no_teacher_terms_reduce_to_the_hard_loss():
  targets, outputs = batch([1, 1, 0, 1])
  for observability in (True, False):
    w = distill.DistillWeights(hard_observability=observability)
    got = compute(targets, outputs, w)
    hard = losses.thinned_poisson_loss(
        {k: tf.constant(v) for k, v in targets.items()},
        tf.constant(outputs[distill.LOG_RATES]), observability)
    assert got['loss'] == pytest.approx(float(tf.reduce_mean(hard)), rel=1e-6)
    assert got['loss'] == got['hard']


@pytest.mark.parametrize('temperature', [1.0, 2.5])
def test_poisson_kl_is_zero_when_student_equals_teacher(temperature):
  targets, outputs = batch([1, 1, 1])
  outputs[distill.LOG_RATES] = np.log(targets[distill.TEACHER_RATES])
  w = distill.DistillWeights(alpha=1.0, temperature=temperature)
  assert compute(targets, outputs, w)['soft'] == pytest.approx(0.0, abs=1e-7)
  kl = distill.poisson_kl(tf.constant([-3.0, 0.0, 1.0]), tf.constant([-2.0, 0.5, 1.0]))
  assert (kl.numpy()[:2] > 0).all() and kl.numpy()[2] == 0.0


def test_tcpa_weights_scale_only_the_distilled_terms():
  targets, outputs = batch([1, 1, 1, 1], tcpa=[60.0, 60.0, 240.0, 240.0])
  flat = compute(targets, outputs, distill.DistillWeights(
      alpha=0.5, aux_weight=0.5, hint_weight=0.5, tcpa_beta=0.0))
  weighted = compute(targets, outputs, distill.DistillWeights(
      alpha=0.5, aux_weight=0.5, hint_weight=0.5, tcpa_beta=1.0, tcpa_reference=60.0))
  assert weighted['hard'] == flat['hard']
  for name in ('soft', 'aux', 'hint'):
    assert weighted[name] > flat[name]
  # With tCPA = reference everywhere, beta changes nothing.
  targets[distill.TCPA][:] = 60.0
  assert compute(targets, outputs, distill.DistillWeights(
      alpha=0.5, tcpa_beta=2.0))['soft'] == pytest.approx(compute(
          targets, outputs, distill.DistillWeights(alpha=0.5))['soft'])
