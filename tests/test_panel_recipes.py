"""Teacher-free students that use the measurement panel (issue 14, deliverable 6):
the panel-calibrated offsets, the panel-only filter and the student's own
observability head; none reads in_panel as an input."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from models import distill
from models import export
from models import losses
from models import panel_calibration
from models import student_trainer
from models import towers
from schemas import columns
from schemas import records
from world import synthetic

W = len(synthetic.WINDOW_NAMES)
KEYS = panel_calibration.PanelKeys.of(synthetic.spec())
N_SEGMENTS = KEYS.n_segments
N_COUNTRIES = dict(KEYS.groups)[synthetic.COUNTRY]
N_ADVERTISERS = dict(KEYS.groups)[synthetic.ADVERTISER]
PANEL_RECIPES = ('offset_panel_calibrated', 'panel_only', 'offset_observability_head')


def _rows(n, rng, segment_q, country_q, adv_q, panel_share=0.03):
  """Clicks observed with probability segment x country x advertiser factors
  (per window for the segment), advertisers' rates spread over two orders of
  magnitude, the panel fully observed. The prior is each segment's exact mean
  observability (a measurement study's), which the country and advertiser
  factors move around. Returns the rows, the true observability and the prior."""
  browser = rng.integers(0, 5, n)
  fp = rng.integers(0, 2, n)
  country = rng.integers(0, 32, n)
  adv = rng.integers(0, 300, n)
  panel = rng.random(n) < panel_share
  segment = panel_calibration.segment_index(browser, fp)
  q = np.clip(segment_q[segment] * (country_q[country] * adv_q[adv])[:, None], 0, 1)
  e = rng.uniform(0.3, 1.0, (n, W))
  adv_rate = np.exp(rng.normal(0.0, 1.2, 300))
  rate = (0.3 * adv_rate[adv] * rng.gamma(2.0, 0.5, n))[:, None] * np.array(
      [0.5, 0.3, 0.2])
  seen = np.where(panel[:, None], 1.0, q)
  y = rng.poisson(rate * e * seen)
  # The prior: the segment's observed share of true conversions.
  prior = np.stack([np.bincount(segment, (rate * q)[:, i], minlength=len(segment_q)) /
                    np.bincount(segment, rate[:, i], minlength=len(segment_q))
                    for i in range(W)], 1)[segment]
  o = np.where(panel[:, None], e, prior * e)
  rows = {synthetic.BROWSER: browser, synthetic.ADVERTISER_FIRST_PARTY: fp,
          'country': country, 'advertiser_id': adv,
          synthetic.IN_PANEL: panel.astype(np.int64)}
  for i in range(W):
    rows[synthetic.LABELS[i]] = y[:, i]
    rows[synthetic.EXPOSURES[i]] = e[:, i]
    rows[synthetic.OBSERVED_EXPOSURES[i]] = o[:, i]
  return rows, q, prior


def _calibrated(rows, tables, prior):
  return np.minimum(prior * panel_calibration.ratios(tables, KEYS, rows), 1.0)


def _rmse(est, q, off):
  return float(np.sqrt(((est[off] - q[off]) ** 2).mean()))


def test_panel_calibration_recovers_what_the_prior_misses():
  """Countries observed x0.5-1 and advertisers x0.6-1 under exact segment priors
  and a 3% panel: the calibrated observability's error is well below the
  prior's (0.60 of it), and each segment keeps the prior's mean."""
  rng = np.random.default_rng(0)
  segment_q = rng.uniform(0.4, 0.95, (N_SEGMENTS, W))
  country_q = rng.uniform(0.5, 1.0, N_COUNTRIES)
  adv_q = np.ones(N_ADVERTISERS)
  adv_q[:300] = rng.uniform(0.6, 1.0, 300)
  rows, q, prior = _rows(600_000, rng, segment_q, country_q, adv_q)
  tables = panel_calibration.fit(rows, KEYS)
  est = _calibrated(rows, tables, prior)
  off = rows[synthetic.IN_PANEL] == 0
  assert _rmse(est, q, off) < 0.7 * _rmse(prior, q, off)
  # The offsets move between countries and advertisers, not the prior's level:
  # per segment and window, the rate-weighted mean offset is the prior's.
  y = sum(rows[c] for c in synthetic.LABELS)
  o = np.stack([rows[c] for c in synthetic.OBSERVED_EXPOSURES], 1)
  weight = panel_calibration.rate_index(rows['advertiser_id'], N_ADVERTISERS, y,
                                       o.sum(1), off)
  moved = o * panel_calibration.ratios(tables, KEYS, rows)
  segment = panel_calibration.segment_index(rows[synthetic.BROWSER],
                                            rows[synthetic.ADVERTISER_FIRST_PARTY])
  for s in (0, 5, 9):
    sel = off & (segment == s)
    np.testing.assert_allclose((weight[sel, None] * moved[sel]).sum(0),
                               (weight[sel, None] * o[sel]).sum(0), rtol=1e-9)
  # The TF lookup applies the same tables (and keeps the panel at e).
  k = 1000
  raw = {c: tf.constant(np.asarray(rows[c])[:k, None]) for c in
         KEYS.key_columns() + (synthetic.IN_PANEL,)}
  e = np.stack([rows[c][:k] for c in synthetic.EXPOSURES], 1)
  got = panel_calibration.apply(tables, KEYS, raw, raw[synthetic.IN_PANEL],
                                tf.constant(o[:k], tf.float32),
                                tf.constant(e, tf.float32)).numpy()
  want = np.minimum(o[:k] * panel_calibration.ratios(
      tables, KEYS, {c: np.asarray(v)[:k] for c, v in rows.items()}), e)
  want = np.where(rows[synthetic.IN_PANEL][:k, None] == 1, e, want)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_panel_calibration_adds_little_where_the_prior_is_right():
  """No country or advertiser effect: the calibration stays within about 6% of
  the exact prior on average (the noise of ~9,000 panel clicks, shrunk), far
  below the 25% country effects the test above recovers."""
  rng = np.random.default_rng(1)
  segment_q = rng.uniform(0.4, 0.95, (N_SEGMENTS, W))
  rows, q, prior = _rows(300_000, rng, segment_q,
                         np.ones(N_COUNTRIES),
                         np.ones(N_ADVERTISERS))
  est = _calibrated(rows, panel_calibration.fit(rows, KEYS), prior)
  off = rows[synthetic.IN_PANEL] == 0
  assert np.abs(est[off] / prior[off] - 1).mean() < 0.08


def test_smoothing_keeps_sparse_groups_near_the_pooled_ratio_without_bias():
  """Groups with a handful of conversions keep about the pooled ratio, the one
  with plenty its own; and many small groups of one true ratio average to it
  (no group is dropped for a zero count)."""
  observed = np.array([2.0, 0.0, 3.0, 4000.0])
  expected = np.array([1.0, 2.0, 2.0, 2000.0])
  panel = np.array([1.0, 1.0, 0.0, 1000.0])
  panel_expected = np.array([1.0, 1.0, 1.0, 1000.0])
  out = panel_calibration.smoothed_log_ratio(observed, expected, panel, panel_expected)
  pooled = np.log(observed.sum() / expected.sum()) - np.log(panel.sum() /
                                                           panel_expected.sum())
  assert abs(out[3] - np.log(2.0)) < 0.02
  assert np.all(np.abs(out[:3] - pooled) < 0.2)
  rng = np.random.default_rng(5)
  n = 5000
  e = rng.uniform(0.5, 1.5, n)
  p = rng.uniform(0.05, 0.15, n) * 10  # ~0.3 panel conversions a group
  ratio = panel_calibration.smoothed_log_ratio(
      rng.poisson(0.6 * 0.3 * e), e, rng.poisson(0.3 * p), p)
  assert abs(np.exp(np.mean(ratio)) - 0.6) < 0.05


@pytest.mark.parametrize('recipe', PANEL_RECIPES)
def test_panel_recipes_read_the_panel_only_as_a_target(recipe):
  cfg = config_lib.load_config(None, [f'distill.recipe={recipe}'])
  weights = distill.DistillWeights.from_config(cfg.distill)
  assert weights.uses_panel and not weights.uses_teacher
  network = student_trainer.build_network(cfg, weights, hint_width=8)
  assert set(network.input) == set(synthetic.SERVING_FEATURES)
  assert synthetic.IN_PANEL in student_trainer.target_columns(weights,
                                                              synthetic.spec())
  assert (towers.OBS_LOGIT_SHIFT in network.output) == (
      recipe == 'offset_observability_head')


def test_the_students_own_head_uses_the_teachers_offsets():
  """offset_observability_head's hard term is the thinned NLL with the head's
  offsets (e on the panel), the offset student's with a zero head."""
  rng = np.random.default_rng(2)
  n = 64
  e = rng.uniform(0.2, 1.0, (n, W)).astype(np.float32)
  panel = (rng.random((n, 1)) < 0.3).astype(np.int64)
  targets = {losses.COUNTS: rng.poisson(0.3, (n, W)).astype(np.float32),
             losses.EXPOSURES: e,
             losses.OBSERVED_EXPOSURES: np.where(panel == 1, e, 0.5 * e).astype(
                 np.float32),
             losses.OBSERVED_FRACTION: np.full((n, 1), 0.5, np.float32),
             losses.IN_PANEL: panel}
  log_rates = np.log(rng.gamma(1.0, 0.3, (n, W))).astype(np.float32)
  head = distill.DistillWeights(hard_observability=True, observability_head=True)
  plain = distill.DistillWeights(hard_observability=True)
  zero = distill.per_example_terms(targets, {
      towers.LOG_RATES: log_rates, towers.OBS_LOGIT_SHIFT: np.zeros((n, W), np.float32)},
                                   head)['hard']
  base = distill.per_example_terms(targets, {towers.LOG_RATES: log_rates}, plain)['hard']
  np.testing.assert_allclose(zero.numpy(), base.numpy(), rtol=1e-5)
  shift = np.full((n, W), 0.8, np.float32)
  moved = distill.per_example_terms(
      targets, {towers.LOG_RATES: log_rates, towers.OBS_LOGIT_SHIFT: shift}, head)['hard']
  want = tf.reduce_sum(losses.poisson_nll_with_offset(
      targets[losses.COUNTS], log_rates, losses.teacher_offsets(
          targets, {towers.OBS_LOGIT_SHIFT: shift})), axis=1)
  np.testing.assert_allclose(moved.numpy(), want.numpy(), rtol=1e-6)
  on_panel = panel[:, 0] == 1
  np.testing.assert_allclose(moved.numpy()[on_panel], base.numpy()[on_panel], rtol=1e-5)


@pytest.mark.e2e
@pytest.mark.parametrize('recipe', PANEL_RECIPES)
def test_panel_recipes_train_through_run_fn_on_the_pipelines_examples(
    e2e, recipe, tmp_path):
  """The student's run_fn trains each panel recipe on the end-to-end run's
  BulkInferrer examples; its export serves from serving features alone."""
  inferred = e2e.artifact('BulkInferrer', 'output_examples', 'kd').uri
  cfg = config_lib.load_config(None, [f'distill.recipe={recipe}',
                                      'model.student.train_steps=40',
                                      'model.student.batch_size=128'])
  out = str(tmp_path / 'student')
  student_trainer.run_fn(types.SimpleNamespace(
      train_files=[os.path.join(inferred, 'Split-train', '*')],
      eval_files=[os.path.join(inferred, 'Split-eval', '*')],
      train_steps=40, eval_steps=2,
      transform_graph_path=e2e.artifact('Transform', 'transform_graph', 'kd').uri,
      schema_path=None, serving_model_dir=out, base_model=None,
      custom_config=config_lib.trainer_custom_config(cfg)))
  summary = export.read_summary(out)
  assert summary['recipe'] == recipe
  assert ('panel_calibration' in summary) == (recipe == 'offset_panel_calibrated')
  if recipe == 'offset_panel_calibrated':
    assert set(summary['panel_calibration']) == {'segment', synthetic.COUNTRY,
                                                 synthetic.ADVERTISER}
  raw = tf.saved_model.load(out).signatures[export.RAW_SIGNATURE]
  assert set(raw.structured_input_signature[1]) == set(synthetic.SERVING_FEATURES)
  rows = records.read_examples(os.path.join(inferred, 'Split-eval'))
  pconvs = raw(**{n: tf.constant(rows[n][:64, None]) for n in synthetic.SERVING_FEATURES})
  values = pconvs[export.PCONVS].numpy()
  assert np.isfinite(values).all() and (values > 0).all()
