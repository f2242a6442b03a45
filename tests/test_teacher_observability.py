"""The teacher's observability head (issue 14, deliverable 5, first part): it
learns, off the measurement panel, what the prior's observed exposure misses, and
the panel keeps the rate honest."""

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from models import export
from models import features as features_lib
from models import losses
from models import towers
from models import training
from schemas import columns
from world import synthetic

W = len(synthetic.WINDOW_NAMES)


def _targets(n, rng, panel_share=0.3):
  e = rng.uniform(0.2, 1.0, (n, W)).astype(np.float32)
  panel = rng.random((n, 1)) < panel_share
  return {
      losses.COUNTS: rng.poisson(0.3, (n, W)).astype(np.float32),
      losses.EXPOSURES: e,
      # As the ExampleGen writes it: a panel click's observed exposure is e.
      losses.OBSERVED_EXPOSURES: np.where(panel, e, 0.5 * e).astype(np.float32),
      losses.OBSERVED_FRACTION: np.full((n, 1), 0.5, np.float32),
      losses.IN_PANEL: panel.astype(np.int64),
  }


def test_a_zero_factor_is_the_thinned_loss_and_the_panel_ignores_the_factor():
  rng = np.random.default_rng(0)
  n = 200
  targets = _targets(n, rng)
  log_rates = tf.constant(np.log(rng.gamma(1.0, 0.3, (n, W))), tf.float32)
  plain = losses.teacher_loss(targets, {towers.LOG_RATES: log_rates})['loss']
  zero = losses.teacher_loss(targets, {towers.LOG_RATES: log_rates,
                                       towers.OBS_LOGIT_SHIFT: tf.zeros((n, W))})
  np.testing.assert_allclose(zero['loss'].numpy(), plain.numpy(), rtol=1e-6)
  # Off the panel the offset is e * sigmoid(logit(o / e) + d); on it, e.
  factor = tf.Variable(np.full((n, W), 0.4, np.float32))
  with tf.GradientTape() as tape:
    offsets = losses.teacher_offsets(
        targets, {towers.LOG_RATES: log_rates, towers.OBS_LOGIT_SHIFT: factor})
    loss = losses.teacher_loss(targets, {towers.LOG_RATES: log_rates,
                                         towers.OBS_LOGIT_SHIFT: factor})['loss']
  panel = targets[losses.IN_PANEL][:, 0] == 1
  e = targets[losses.EXPOSURES]
  want = np.where(panel[:, None], e, e / (1 + np.exp(-(np.log(0.5 / 0.5) + 0.4))))
  np.testing.assert_allclose(offsets.numpy(), want, rtol=1e-6)
  grad = tape.gradient(loss, factor).numpy()
  assert (grad[panel] == 0).all() and (grad[~panel] != 0).any()


def test_the_head_learns_what_the_prior_misses_and_the_panel_pins_the_rate():
  """20 advertisers observed 15%-95% of the time, a flat prior of 55%, a 5%
  panel: the head's teacher gets each advertiser's rate right and estimates its
  observability better than the prior; without the head the rate takes the
  prior's error."""
  rng = np.random.default_rng(1)
  n, n_adv = 60_000, 20
  adv = rng.integers(0, n_adv, n)
  eng = rng.standard_normal(n).astype(np.float32)
  q = np.linspace(0.15, 0.95, n_adv)[adv]
  rate = 0.2 * np.exp(0.4 * eng)
  panel = rng.random(n) < 0.05
  seen = np.where(panel, 1.0, q)
  counts = np.zeros((n, W), np.float32)
  counts[:, 0] = rng.poisson(rate * seen)
  exposures = np.zeros((n, W), np.float32)
  exposures[:, 0] = 1.0
  observed = exposures * np.where(panel, 1.0, 0.55)[:, None].astype(np.float32)
  features = {'advertiser_id': adv[:, None].astype(np.int64),
              'user_engagement': eng[:, None]}
  targets = {losses.COUNTS: counts, losses.EXPOSURES: exposures,
             losses.OBSERVED_EXPOSURES: observed,
             losses.OBSERVED_FRACTION: np.full((n, 1), 0.55, np.float32),
             losses.IN_PANEL: panel[:, None].astype(np.int64)}
  def fit(head):
    tf.keras.utils.set_random_seed(0)
    network = towers.build_tower([synthetic.column('advertiser_id'), synthetic.column('user_engagement')],
                                 W, [16], 0, 4,
                                 name='t', observability_head=head)
    model = training.LossModel(network, losses.teacher_loss)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02))
    ds = tf.data.Dataset.from_tensor_slices((features, targets)).shuffle(
        n, seed=0).batch(1024).repeat()
    model.fit(ds, steps_per_epoch=600, epochs=1, verbose=0)
    return network(features)

  def per_advertiser(values):
    return np.array([values[adv == a].mean() for a in range(n_adv)])
  true_rate = per_advertiser(rate)
  true_q = np.linspace(0.15, 0.95, n_adv)
  errors = {}
  for head in (False, True):
    out = fit(head)
    got = per_advertiser(np.exp(out[towers.LOG_RATES].numpy()[:, 0]))
    errors[head] = np.abs(np.log(got / true_rate))
    if head:
      shift = out[towers.OBS_LOGIT_SHIFT].numpy()[:, 0]
      q_hat = per_advertiser(1 / (1 + np.exp(-(np.log(0.55 / 0.45) + shift))))
      # The acceptance criterion in small: better than the population prior.
      assert np.abs(q_hat - true_q).mean() < 0.5 * np.abs(0.55 - true_q).mean(), (
          q_hat, true_q)
  # Without the head the rate carries q / prior (up to 1.7x off); with it, the
  # panel keeps it near the truth.
  assert errors[False].mean() > 0.3, errors[False]
  assert errors[True].mean() < 0.5 * errors[False].mean(), errors


class _Features(tf.Module):
  """A stand-in for the Transform layer: ids folded, numerics as float32."""

  def __call__(self, raw):
    out = {}
    for name, x in raw.items():
      col = synthetic.column(name)
      out[name] = (tf.math.floormod(x, col.buckets) if col.buckets
                   else tf.cast(x, tf.float32))
    return out


def _examples(rows):
  """Serialized tf.Examples with every teacher feature and the columns the
  observability outputs read."""
  out = []
  for row in rows:
    feats = {}
    for name in synthetic.TEACHER_FEATURES + export.observability_columns(
        synthetic.spec()):
      value = row.get(name, 1)
      if features_lib.dtype(synthetic.column(name)) == tf.int64:
        feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
      else:
        feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
    out.append(tf.train.Example(features=tf.train.Features(
        feature=feats)).SerializeToString())
  return tf.constant(out)


@pytest.mark.parametrize('head', [False, True])
def test_the_predict_signature_writes_per_click_observability(tmp_path, head):
  """What the BulkInferrer writes: observability at maturity (the prior's share
  moved by the head's shift; 1 on the panel) and the observed exposure the
  teacher's likelihood used (o without the head)."""
  cfg = config_lib.load_config(None, [
      f'model.teacher_observability_head={str(head).lower()}'])
  network = towers.build_teacher(cfg)
  shift = np.array([0.7, -0.4, 1.1], np.float32)
  if head:
    layer = network.get_layer('observability_head')
    layer.set_weights([layer.get_weights()[0], shift])
  rng = np.random.default_rng(0)
  shares = rng.uniform(0.2, 0.9, (10, W)).astype(np.float32)
  rows = []
  for i in range(8):
    e = rng.uniform(0.1, 1.0, W)
    b, fp = i % 5, i % 2
    rows.append({synthetic.BROWSER: b, synthetic.ADVERTISER_FIRST_PARTY: fp,
                 synthetic.IN_PANEL: int(i == 3),
                 # The prior's mature share, as the ExampleGen writes it (1 on
                 # the panel).
                 **dict(zip(synthetic.PRIOR_OBSERVABILITY,
                            np.ones(W) if i == 3 else shares[2 * b + fp])),
                 **dict(zip(synthetic.EXPOSURES, e)),
                 **dict(zip(synthetic.OBSERVED_EXPOSURES,
                            e if i == 3 else e * rng.uniform(0.2, 0.9, W)))})
  export.save_teacher(network, _Features(), str(tmp_path), {}, cfg.dataset)
  predict = tf.saved_model.load(str(tmp_path)).signatures[export.PREDICT_SIGNATURE]
  got = {k: v.numpy() for k, v in predict(examples=_examples(rows)).items()}
  d = shift if head else np.zeros(W)

  def sigmoid_shift(p):
    return 1 / (1 + np.exp(-(np.log(p / (1 - p)) + d)))
  for i, row in enumerate(rows):
    panel = row[synthetic.IN_PANEL] == 1
    e = np.array([row[c] for c in synthetic.EXPOSURES])
    o = np.array([row[c] for c in synthetic.OBSERVED_EXPOSURES])
    p = shares[2 * row[synthetic.BROWSER] + row[synthetic.ADVERTISER_FIRST_PARTY]]
    q = [got[k][i] for k in export.observability_outputs(synthetic.WINDOW_NAMES)]
    observed = [got[k][i]
                for k in export.observed_exposure_outputs(synthetic.WINDOW_NAMES)]
    np.testing.assert_allclose(q, np.ones(W) if panel else sigmoid_shift(p),
                               rtol=1e-5)
    np.testing.assert_allclose(observed, e if panel else e * sigmoid_shift(o / e),
                               rtol=1e-4)
  for key in export.rate_outputs(synthetic.WINDOW_NAMES) + (export.HINT_OUTPUT,):
    assert key in got


def test_the_predict_signature_applies_the_panel_calibration(tmp_path):
  """With model.teacher_panel_calibration the teacher's observability starts
  from the prior's mature share times the panel ratios, and its observed
  exposure from the calibrated offsets, as in its training."""
  cfg = config_lib.load_config(None, ['model.teacher_observability_head=true',
                                      'model.teacher_panel_calibration=true'])
  network = towers.build_teacher(cfg)
  shift = np.array([0.3, -0.2, 0.5], np.float32)
  layer = network.get_layer('observability_head')
  layer.set_weights([layer.get_weights()[0], shift])
  rng = np.random.default_rng(1)
  shares = rng.uniform(0.3, 0.9, (10, W)).astype(np.float32)
  tables = {'segment': rng.uniform(0.5, 1.5, (10, W)),
            synthetic.COUNTRY: rng.uniform(0.7, 1.2, 32),
            synthetic.ADVERTISER: rng.uniform(0.6, 1.3, 4096)}
  rows = []
  for i in range(6):
    e = rng.uniform(0.1, 1.0, W)
    b, fp = i % 5, i % 2
    rows.append({synthetic.BROWSER: b, synthetic.ADVERTISER_FIRST_PARTY: fp,
                 'country': 3 * i, 'advertiser_id': 100 + i, synthetic.IN_PANEL: 0,
                 **dict(zip(synthetic.PRIOR_OBSERVABILITY, shares[2 * b + fp])),
                 **dict(zip(synthetic.EXPOSURES, e)),
                 **dict(zip(synthetic.OBSERVED_EXPOSURES, e * rng.uniform(0.2, 0.6, W)))})
  export.save_teacher(network, _Features(), str(tmp_path), {}, cfg.dataset, tables)
  predict = tf.saved_model.load(str(tmp_path)).signatures[export.PREDICT_SIGNATURE]
  got = {k: v.numpy() for k, v in predict(examples=_examples(rows)).items()}

  def sigmoid_shift(p):
    return 1 / (1 + np.exp(-(np.log(p / (1 - p)) + shift)))
  for i, row in enumerate(rows):
    ratio = (tables['segment'][2 * row[synthetic.BROWSER] +
                               row[synthetic.ADVERTISER_FIRST_PARTY]] *
             tables[synthetic.COUNTRY][row['country']] *
             tables[synthetic.ADVERTISER][row['advertiser_id']])
    e = np.array([row[c] for c in synthetic.EXPOSURES])
    o = np.minimum(np.array([row[c] for c in synthetic.OBSERVED_EXPOSURES]) * ratio, e)
    p = np.minimum(shares[2 * row[synthetic.BROWSER] +
                          row[synthetic.ADVERTISER_FIRST_PARTY]] * ratio, 1 - 1e-6)
    np.testing.assert_allclose(
        [got[k][i] for k in export.observability_outputs(synthetic.WINDOW_NAMES)],
        sigmoid_shift(p), rtol=1e-4)
    np.testing.assert_allclose(
        [got[k][i] for k in export.observed_exposure_outputs(synthetic.WINDOW_NAMES)],
        e * sigmoid_shift(o / e), rtol=1e-4)
