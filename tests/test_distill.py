"""The student's loss against hand-computed values (models/distill.py)."""

import math

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from models import distill
from models import losses
from models import student_trainer
from schemas import columns
from world import synthetic

W = 3


def batch(mask, tcpa=None, seed=0, n=None, hint_width=4):
  rng = np.random.default_rng(seed)
  n = n or len(mask)
  f = rng.choice([1.0, 0.3], (n, 1)).astype(np.float32)
  e = rng.uniform(0.2, 1.0, (n, W)).astype(np.float32)
  # The observed exposure need not be f * e (a cap inside a window).
  o = (f * e * rng.uniform(0.5, 1.0, (n, W))).astype(np.float32)
  targets = {
      losses.COUNTS: rng.poisson(0.3, (n, W)).astype(np.float32),
      losses.EXPOSURES: e,
      losses.OBSERVED_EXPOSURES: o,
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


def features(names, n, rng):
  """Random transformed features: bucket ids and standard normal numerics."""
  out = {}
  for name in names:
    col = synthetic.column(name)
    out[name] = (rng.integers(0, col.buckets, (n, 1)) if col.buckets
                 else rng.normal(size=(n, 1)).astype(np.float32))
  return out


def nll(y, mu):
  return mu - (y * math.log(mu) if y else 0.0) + math.lgamma(y + 1)


def soft_reference(t, s, tau):
  """soft_i from teacher rates t_w and student log-rates s_w, in plain Python."""
  rates = [math.exp(x) for x in s]
  total_t, total_s = sum(t), sum(rates)
  kl = total_t * math.log(total_t / total_s) - total_t + total_s

  def softmax(logits):
    z = [math.exp(x / tau) for x in logits]
    return [x / sum(z) for x in z]
  p, q = softmax([math.log(x) for x in t]), softmax(s)
  return kl + tau**2 * total_t * sum(a * math.log(a / b) for a, b in zip(p, q))


def reference(targets, outputs, w: distill.DistillWeights):
  """The module docstring's formula, one example at a time in plain Python."""
  n = len(targets[distill.TEACHER_MASK])
  hard = soft = aux = hint = 0.0
  m_total = 0.0
  for i in range(n):
    m = float(targets[distill.TEACHER_MASK][i, 0])
    v = (float(targets[distill.TCPA][i, 0]) / w.tcpa_reference)**w.tcpa_beta
    m_total += m
    soft += m * v * soft_reference(targets[distill.TEACHER_RATES][i].tolist(),
                                   outputs[distill.LOG_RATES][i].tolist(),
                                   w.temperature)
    for k in range(W):
      y = float(targets[losses.COUNTS][i, k])
      e = float(targets[losses.EXPOSURES][i, k])
      s = float(outputs[distill.LOG_RATES][i, k])
      t = float(targets[distill.TEACHER_RATES][i, k])
      a = float(outputs[distill.AUX_LOG_RATES][i, k])
      observed = float(targets[losses.OBSERVED_EXPOSURES][i, k])
      o = observed if w.hard_observability else e
      hard += nll(y, o * math.exp(s))
      # The teacher's observed exposure where it wrote one, else the prior's.
      teacher_observed = float(targets.get(distill.TEACHER_OBSERVED,
                                           targets[losses.OBSERVED_EXPOSURES])[i, k])
      target = y + (e - teacher_observed) * t
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


def test_aux_reads_the_teachers_observed_exposure_when_given():
  """With the teacher's observability head the modeled conversions are
  (e - o~) t, not (e - o) t: a different aux term from the same batch."""
  targets, outputs = batch([1, 0, 1, 1, 0, 1])
  w = distill.DistillWeights(alpha=0.0, aux_weight=1.0)
  prior = compute(targets, outputs, w)
  rng = np.random.default_rng(3)
  targets[distill.TEACHER_OBSERVED] = (targets[losses.EXPOSURES] * rng.uniform(
      0.1, 1.0, targets[losses.EXPOSURES].shape)).astype(np.float32)
  got, want = compute(targets, outputs, w), reference(targets, outputs, w)
  assert got['aux'] == pytest.approx(want['aux'], rel=1e-4)
  assert abs(got['aux'] - prior['aux']) > 1e-3
  # A non-finite teacher exposure masks its example like any teacher column.
  targets[distill.TEACHER_OBSERVED][0, 0] = np.nan
  assert compute(targets, outputs, w)['teacher_examples'] == 3


def test_masked_terms_contribute_exactly_zero():
  targets, outputs = batch([1, 0, 1, 0])
  base = compute(targets, outputs, FULL)
  # Garbage (even non-finite) teacher columns on masked examples change nothing.
  for key in (distill.TEACHER_RATES, distill.TEACHER_HINT):
    targets[key][1] = np.nan
    targets[key][3] = np.inf
    targets[key][3, 0] = -np.inf
  assert compute(targets, outputs, FULL) == base
  # Everything masked: only the hard term is left.
  targets, outputs = batch([0, 0, 0, 0])
  got = compute(targets, outputs, FULL)
  assert got['soft'] == got['aux'] == got['hint'] == 0.0
  assert got['loss'] == pytest.approx((1 - FULL.alpha) * got['hard'])


def student_gradients(network, feats, targets, w, scale=1.0):
  """Dense gradients of scale * student_loss for every trainable variable."""
  with tf.GradientTape() as tape:
    loss = scale * distill.student_loss(
        {k: tf.constant(v) for k, v in targets.items()}, network(feats), w)['loss']
  grads = tape.gradient(loss, network.trainable_variables,
                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
  return [tf.convert_to_tensor(g).numpy() for g in grads]


def test_masked_terms_give_exactly_zero_gradients():
  cfg = config_lib.load_config(None, ['model.student.hidden_units=[16,8]'])
  network = student_trainer.build_network(cfg, FULL, hint_width=4)
  mask = [1, 0, 1, 0, 0, 1]
  masked = [1, 3, 4]
  feats = features(synthetic.SERVING_FEATURES, len(mask), np.random.default_rng(1))
  targets, _ = batch(mask)
  want = student_gradients(network, feats, targets, FULL)

  def with_masked(rates, hint, tcpa):
    out = {k: v.copy() for k, v in targets.items()}
    out[distill.TEACHER_RATES][masked] = rates
    out[distill.TEACHER_HINT][masked] = hint
    out[distill.TCPA][masked] = tcpa
    return out
  garbage = with_masked([[np.nan, np.inf, 1.0], [np.inf, np.inf, np.inf],
                         [-np.inf, np.nan, 0.0]],
                        [[np.nan] * 4, [np.inf, -np.inf, 0.0, 1.0], [-np.inf] * 4],
                        [[np.nan], [0.0], [np.inf]])
  finite = with_masked(123.0, -7.0, 5.0)
  for changed in (garbage, finite):
    got = student_gradients(network, feats, changed, FULL)
    assert all(np.isfinite(g).all() for g in got)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
  # Every row masked: the gradient of (1 - alpha) * the hard loss.
  garbage[distill.TEACHER_MASK][:] = 0.0
  garbage[distill.TEACHER_RATES][:] = np.nan
  garbage[distill.TEACHER_HINT][:] = np.inf
  got = student_gradients(network, feats, garbage, FULL)
  hard = student_gradients(network, feats, garbage, distill.DistillWeights(),
                           scale=1.0 - FULL.alpha)
  assert all(np.isfinite(g).all() for g in got)
  assert all(np.array_equal(a, b) for a, b in zip(got, hard))


def test_non_finite_teacher_columns_mask_their_example():
  targets, outputs = batch([1, 1, 0, 1])
  masked = {k: v.copy() for k, v in targets.items()}
  masked[distill.TEACHER_MASK][1] = 0.0
  for key in (distill.TEACHER_RATES, distill.TEACHER_HINT):
    broken = {k: v.copy() for k, v in targets.items()}
    broken[key][1, 0] = np.nan if key == distill.TEACHER_RATES else np.inf
    assert compute(broken, outputs, FULL) == compute(masked, outputs, FULL)
  # A column no weighted term reads masks nothing.
  broken = {k: v.copy() for k, v in targets.items()}
  broken[distill.TEACHER_HINT][1, 0] = np.nan
  w = distill.DistillWeights(alpha=0.5)
  assert compute(broken, outputs, w) == compute(targets, outputs, w)


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


def test_soft_term_at_temperature_one_is_the_poisson_kl_over_windows():
  rng = np.random.default_rng(3)
  lt = rng.normal(-3.0, 1.5, (64, W)).astype(np.float32)
  ls = rng.normal(-3.0, 1.5, (64, W)).astype(np.float32)
  got = distill.soft_kl(tf.constant(lt), tf.constant(ls), 1.0).numpy()
  want = tf.reduce_sum(distill.poisson_kl(tf.constant(lt), tf.constant(ls)),
                       axis=1).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * want.max())
  # And in float64 (the identity, not float32 rounding).
  got = distill.soft_kl(tf.constant(lt, tf.float64), tf.constant(ls, tf.float64))
  want = tf.reduce_sum(distill.poisson_kl(tf.constant(lt, tf.float64),
                                          tf.constant(ls, tf.float64)), axis=1)
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)


@pytest.mark.parametrize('temperature', [1.0, 2.0, 4.0, 8.0])
def test_soft_term_is_non_negative_and_zero_only_at_the_teacher(temperature):
  rng = np.random.default_rng(4)
  lt = rng.normal(-3.0, 1.5, (64, W)).astype(np.float32)
  ls = rng.normal(-3.0, 1.5, (64, W)).astype(np.float32)
  kl = distill.soft_kl(tf.constant(lt), tf.constant(ls), temperature).numpy()
  assert (kl > 0).all()
  assert (distill.soft_kl(tf.constant(lt), tf.constant(lt), temperature).numpy()
          == 0.0).all()
  # The total rate is matched exactly: only the split over windows is tempered.
  lt = lt.astype(np.float64)
  scaled = distill.soft_kl(tf.constant(lt), tf.constant(lt + 0.5), temperature)
  total = np.exp(lt).sum(1) * (-0.5 + np.exp(0.5) - 1.0)
  np.testing.assert_allclose(scaled.numpy(), total, rtol=1e-9)


def test_temperature_softens_the_split_over_windows():
  targets, _ = batch([1] * 8)
  log_t = np.log(targets[distill.TEACHER_RATES])

  def entropy(tau):
    p = tf.nn.softmax(log_t / tau, axis=1).numpy()
    return -(p * np.log(p)).sum(1)
  assert (entropy(2.0) > entropy(1.0)).all()
  assert (entropy(4.0) > entropy(2.0)).all()


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
