"""The promotion step: the rule on crafted candidates, the latency comparison's
noise, the spend metric's combiner, and the executor on a tiny TFMA evaluation."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.types import standard_artifacts

import config as config_lib
from components.promotion import executor as promotion
from components.promotion import figures
from components.promotion import latency
from components.promotion import paired
from components.promotion import rule
from components.served_baseline import executor as served_baseline
from models import export
from models import nll
from models import spend_metric
from observation import eval_labels
from observation import labels
from pipeline import evaluation
from pipeline import report
from schemas import columns
from world import synthetic

E = rule.Estimate
BETTER = E(-0.01, -0.015, -0.005)  # candidate - baseline wholly below 0
SAME = E(0.0, -0.01, 0.01)  # an interval around 0: within the noise
WORSE = E(0.01, 0.005, 0.015)
KEY = promotion.KEY_SLICE
TCPA = [f'{columns.TCPA_BUCKET}={b}' for b in columns.TCPA_BUCKETS]


def areas(loss=SAME, bias=SAME, spend=SAME, buckets=SAME, p50=SAME, p99=SAME,
          latency_applies=True):
  return {
      'loss_bias': rule.loss_bias_area(loss, bias),
      'business': rule.business_area(spend, {s: buckets for s in TCPA}, guard=0.05),
      'latency': (rule.latency_area({'batch_1': {'p50': p50, 'p99': p99},
                                     'batch_64': {'p50': p50, 'p99': p99}})
                  if latency_applies else rule.not_applicable('one graph')),
  }


def decide(rule_name, a, evaluator_blessed=True, value_ok=True, within_cap=True):
  return rule.decide(rule_name, a, evaluator_blessed, value_ok, within_cap)


def test_better_loss_alone_is_not_promoted_under_2_of_3():
  a = areas(loss=BETTER)
  assert a['loss_bias'].improved and not a['business'].improved
  assert not a['latency'].improved
  assert not decide('2_of_3', a)
  # A same-recipe refresh needs only area 1 and the guards.
  assert decide('refresh', a)


def test_two_improved_areas_are_promoted_under_2_of_3():
  assert decide('2_of_3', areas(loss=BETTER, p50=BETTER))
  assert decide('2_of_3', areas(loss=BETTER, spend=BETTER))
  # Business and latency without area 1 are two areas too ...
  assert decide('2_of_3', areas(spend=BETTER, p50=BETTER))
  # ... but not with the loss worse beyond its CI (a guard), nor above the
  # Evaluator's value threshold.
  assert not decide('2_of_3', areas(loss=WORSE, spend=BETTER, p50=BETTER))
  assert not decide('2_of_3', areas(loss=BETTER, p50=BETTER), value_ok=False)


def test_latency_of_one_graph_is_not_applicable_and_2_of_3_needs_loss_and_spend_not_worse():
  """A nightly student against the served one (one architecture and
  quantization): latency cannot improve but by noise, so it is not counted and
  2_of_3 needs area 1 improved and the business area not worse beyond its CI."""
  a = areas(loss=BETTER, latency_applies=False)
  assert not a['latency'].applicable and not rule.all_apply(a)
  # Sharper, spend calibration as good as the baseline's: promoted.
  assert decide('2_of_3', a)
  assert decide('2_of_3', areas(loss=BETTER, spend=BETTER, latency_applies=False))
  # Better calibrated, not better in the loss: not promoted.
  assert not decide('2_of_3', areas(spend=BETTER, latency_applies=False))
  # Better in the loss, overall spend worse beyond its CI: not promoted.
  worse_spend = areas(loss=BETTER, spend=WORSE, latency_applies=False)
  assert worse_spend['business'].worse and worse_spend['business'].guards_hold
  assert not decide('2_of_3', worse_spend)
  assert decide('refresh', worse_spend)  # refresh guards the buckets only
  line = rule.explain('2_of_3', True, a)
  assert line == ('promoted under 2_of_3: area 1 improved, business not worse '
                  '(latency not applicable: area 1 needed, the rest not worse)')
  assert rule.explain('2_of_3', False, worse_spend) == (
      "not promoted under 2_of_3: area 1 improved, ['business'] worse beyond its CI "
      '(latency not applicable: area 1 needed, the rest not worse)')


def test_a_spend_figure_without_an_interval_is_not_judged_and_says_why():
  nan = float('nan')
  a = areas(spend=E(-0.12, nan, nan), loss=BETTER)
  assert a['business'].improved is None
  assert '(no CI)' in a['business'].reason and 'nan' not in a['business'].reason
  assert not decide('2_of_3', a)


def _rows(n=20000, seed=0):
  rng = np.random.default_rng(seed)
  rate = rng.gamma(2.0, 0.05, n)
  return rate, rng.poisson(rate).astype(np.float64)


def test_a_rescaled_baseline_that_wins_bias_but_loses_loss_is_not_area_1():
  # The baseline knows the ranking (rate * noise) but is 30% low; the candidate,
  # a constant, is calibrated: it wins the bias and loses the loss.
  rate, y = _rows()
  baseline = rate * 0.7
  candidate = np.full_like(rate, y.mean())
  night = paired.Night(y, np.ones_like(y), candidate, baseline)
  loss = paired.loss_diff(night)
  bias = paired.log_error_diff(night)
  assert loss.diff.above() and bias['diff'].below()
  area = rule.loss_bias_area(loss.diff, bias['diff'], loss.relative)
  assert not area.improved and not area.guards_hold
  assert not decide('2_of_3', {**areas(p50=BETTER, spend=BETTER), 'loss_bias': area})
  assert not decide('refresh', {**areas(), 'loss_bias': area})


def test_loss_better_but_bias_worse_beyond_its_ci_is_not_area_1():
  a = areas(loss=BETTER, bias=WORSE)
  assert not a['loss_bias'].improved and not a['loss_bias'].guards_hold
  assert not decide('refresh', a)


def test_loss_only_reproduces_the_evaluator_blessing():
  for a in (areas(), areas(loss=BETTER, p50=BETTER), areas(loss=WORSE)):
    for blessed in (True, False):
      assert decide('loss_only', a, evaluator_blessed=blessed) == blessed
      assert decide('loss_only', a, evaluator_blessed=blessed,
                    value_ok=False) == blessed


def test_business_is_overall_spend_with_the_tcpa_buckets_as_guards():
  assert areas(spend=BETTER)['business'].improved
  # A bucket worse by more than the guard (beyond its CI) blocks area 2 and refresh.
  a = areas(loss=BETTER, spend=BETTER, buckets=E(0.2, 0.1, 0.3))
  assert not a['business'].improved and not a['business'].guards_hold
  assert not decide('refresh', a)
  # Worse, but within the guard: allowed.
  assert areas(spend=BETTER, buckets=E(0.04, 0.01, 0.07))['business'].improved
  # Without tCPA there are no buckets: the overall calibration alone.
  alone = rule.business_area(BETTER, {}, guard=0.05)
  assert alone.improved and 'no tCPA in the dataset' in alone.reason
  # A bucket with too few eval conversions for its interval to mean anything
  # guards nothing, and the reason names it.
  worse = {'tcpa_le_50': E(0.2, 0.1, 0.3), 'tcpa_gt_250': E(0.2, 0.1, 0.3)}
  thin = rule.business_area(BETTER, worse, guard=0.05,
                            conversions={'tcpa_le_50': 300, 'tcpa_gt_250': 3},
                            min_conversions=30)
  assert not thin.guards_hold and "['tcpa_le_50']" in thin.reason
  assert "not judged: ['tcpa_gt_250']" in thin.reason
  del worse['tcpa_le_50']
  thin = rule.business_area(BETTER, worse, guard=0.05,
                            conversions={'tcpa_gt_250': 3}, min_conversions=30)
  assert thin.improved and thin.guards_hold


def test_areas_serialise_from_numpy_figures():
  lo = np.float64(-0.02)
  a = rule.loss_bias_area(rule.Estimate(np.float64(-0.01), lo, np.float64(0.001)),
                          rule.Estimate(np.float64(0.0), lo, np.float64(0.02)))
  assert a.improved is False and a.guards_hold is True
  json.dumps(a.to_dict())


def test_paired_figures_count_each_buckets_conversions():
  rng = np.random.default_rng(2)
  rate = rng.gamma(0.5, 0.1, 3000)
  tcpa = rng.choice([20.0, 300.0], 3000, p=[0.97, 0.03])
  bucket = np.where(tcpa > 250, 'tcpa_gt_250', 'tcpa_le_50').astype(object)
  y = rng.poisson(rate).astype(float)
  night = paired.Night(y, np.ones(3000), rate, 0.5 * rate, tcpa, bucket)
  pair = paired.figures(night, ('tcpa_le_50', 'tcpa_50_100', 'tcpa_gt_250'))
  assert set(pair['buckets']) == {'tcpa_le_50', 'tcpa_gt_250'}  # no empty bucket
  for name, b in pair['buckets'].items():
    assert b['conversions'] == y[bucket == name].sum()
  # The candidate at the truth, the baseline at half: spend better overall.
  assert pair['spend']['diff'].below() and pair['loss'].diff.below()


def test_over_the_fallback_cap_no_rule_promotes():
  a = areas(loss=BETTER, spend=BETTER, p50=BETTER)
  assert all(decide(r, a) for r in rule.RULES)
  assert not any(decide(r, a, within_cap=False) for r in rule.RULES)
  assert rule.explain('2_of_3', False, a, within_cap=False).endswith(
      "the fallback band's failed fraction is over its cap")


def test_paired_intervals_are_closed_form_and_cover_the_truth():
  """The same night gives the same interval; on nights where the candidate is
  truly no better, the loss interval excludes 0 below it about 2.5% of the
  time (it covers at its level)."""
  rng = np.random.default_rng(4)
  rate = rng.gamma(0.5, 0.1, 4000)
  baseline = rate * np.exp(rng.normal(0, 0.5, rate.size))
  candidate = rate * np.exp(rng.normal(0, 0.5, rate.size))
  a = paired.loss_diff(paired.Night(rng.poisson(rate).astype(float), np.ones(4000),
                                    candidate, baseline))
  again = paired.loss_diff(paired.Night(rng.poisson(rate).astype(float),
                                        np.ones(4000), candidate, baseline))
  assert a.resolvable > 0 and a.clicks == 4000
  # The expected loss of the two is equal by symmetry: count wrong promotions.
  wins = sum(paired.loss_diff(paired.Night(
      rng.poisson(rate).astype(float), np.ones(4000), candidate, baseline)).diff.below()
             for _ in range(400))
  assert wins <= 0.025 * 400 + 3 * np.sqrt(0.025 * 400), wins
  night = paired.Night(rng.poisson(rate).astype(float), np.ones(4000), candidate,
                       baseline)
  assert paired.loss_diff(night) == paired.loss_diff(night)
  assert again.diff != a.diff


def test_auto_is_2_of_3_on_a_recipe_change_and_refresh_otherwise():
  assert rule.applied_rule('auto', same_recipe=False) == '2_of_3'
  assert rule.applied_rule('auto', same_recipe=True) == 'refresh'
  assert rule.applied_rule('loss_only', same_recipe=False) == 'loss_only'
  with pytest.raises(ValueError):
    rule.applied_rule('3_of_3', same_recipe=True)


def test_the_recipe_fingerprint_ignores_the_training_run():
  summary = {'recipe': 'kd', 'loss_weights': {'alpha': 0.5}, 'parameters': {'a': 3},
             'train_steps': 10, 'warm_start': True}
  same = {**summary, 'train_steps': 20, 'warm_start': False}
  assert export.recipe_fingerprint(summary) == export.recipe_fingerprint(same)
  assert export.recipe_fingerprint(summary) != export.recipe_fingerprint(
      {**summary, 'recipe': 'production'})
  assert export.recipe_fingerprint({'recipe': 'kd'}) == ''


# --- Latency -----------------------------------------------------------------

FEATURES = ('price', 'target_cpa')


def tiny_tflite(path, hidden=(8,), scale=1.0):
  """A TFLite model with raw inputs named like the columns and one output."""
  layers = [tf.keras.layers.Dense(h, activation='relu') for h in hidden]
  out = tf.keras.layers.Dense(1, activation='softplus')

  class M(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name=n)
                                  for n in FEATURES])
    def serve(self, price, target_cpa):
      x = tf.concat([tf.math.log1p(price), tf.math.log1p(target_cpa)], 1)
      for layer in layers:
        x = layer(x)
      return {'pconvs': tf.reshape(out(x), [-1]) * scale}

  m = M()
  m.serve(tf.ones([1, 1]), tf.ones([1, 1]))
  m.vars = [v for l in layers + [out] for v in l.variables]
  saved = os.path.join(path, 'saved')
  tf.saved_model.save(m, saved, signatures={'serving_default': m.serve})
  model = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
  return model


def feature_rows(n=512, seed=0):
  rng = np.random.default_rng(seed)
  return {'price': rng.lognormal(3, 1, n), 'target_cpa': rng.lognormal(4, 1, n)}


def test_two_copies_of_one_model_differ_by_nothing_beyond_noise(tmp_path):
  model = tiny_tflite(str(tmp_path))
  out = latency.compare(model, model, feature_rows(), samples=4000,
                        batches=(1, 16), replicates=300)
  for batch, comparison in out.items():
    for p in ('p50', 'p99'):
      d = comparison['diff'][p]
      assert d.lower <= 0.0 <= d.upper, (batch, p, d)
  assert not rule.latency_area(latency.diffs(out)).improved


def test_a_much_smaller_model_is_faster_beyond_noise(tmp_path):
  small = tiny_tflite(str(tmp_path / 'small'), hidden=(4,))
  big = tiny_tflite(str(tmp_path / 'big'), hidden=(512, 512, 512))
  out = latency.compare(small, big, feature_rows(), samples=2000, batches=(1,),
                        replicates=200)
  assert out['batch_1']['diff']['p50'].upper < 0
  assert rule.latency_area(latency.diffs(out)).improved


# --- The spend metric's combiner ------------------------------------------------


class _Element:
  """What TFMA hands a combiner: features and the model's predictions."""

  def __init__(self, features, prediction):
    self.features = features
    self._prediction = prediction

  def get_predictions(self, model_name, output_name):
    del model_name, output_name
    return np.array([self._prediction])


def test_spend_combiner_equals_the_numpy_reference():
  rng = np.random.default_rng(1)
  n = 300
  rows = {columns.TRUE_CONVERSIONS: rng.poisson(0.3, n).astype(np.float64),
          synthetic.TARGET_CPA: rng.lognormal(4, 1, n)}
  pconvs = rng.gamma(2, 0.15, n)
  (computation,) = spend_metric.SpendProxy(tcpa=synthetic.TARGET_CPA).computations(
      model_names=['m'], output_names=[''])
  combiner = computation.combiner
  accs = [combiner.create_accumulator(), combiner.create_accumulator()]
  for i in range(n):
    element = _Element({k: np.array([v[i]]) for k, v in rows.items()}, pconvs[i])
    accs[i % 2] = combiner.add_input(accs[i % 2], element)
  got = {k.name: v for k, v in combiner.extract_output(
      combiner.merge_accumulators(accs)).items()}
  label, scale, keep = eval_labels.label_and_scale(rows, 'truth', synthetic.WINDOW_NAMES)
  want = spend_metric.reference(rows[synthetic.TARGET_CPA], pconvs, label, scale, keep)
  assert got == pytest.approx(want, rel=1e-9)


# --- The executor on a tiny TFMA evaluation -------------------------------------


def true_rate(price):
  return 0.08 * np.exp(0.3 * np.log1p(price) - 0.6)


def rate_tflite(path, scale):
  """A TFLite model predicting scale x the true rate from the raw price."""

  class M(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name=n)
                                  for n in FEATURES])
    def serve(self, price, target_cpa):
      del target_cpa
      rate = 0.08 * tf.exp(0.3 * tf.math.log1p(price) - 0.6) * scale
      return {'pconvs': tf.reshape(rate, [-1])}

  m = M()
  saved = os.path.join(path, 'saved')
  tf.saved_model.save(m, saved, signatures={'serving_default': m.serve})
  return tf.lite.TFLiteConverter.from_saved_model(saved).convert()


def write_examples(split_dir, n=3000, seed=2):
  """Eval examples with every column the EvalConfig reads; returns the rows."""
  rng = np.random.default_rng(seed)
  tcpa = rng.lognormal(4.2, 1.2, n)
  price = rng.lognormal(3, 1, n)
  rate = true_rate(price)
  fraction = np.where(rng.random(n) < 0.6, 1.0, 0.4)
  rows = {'price': price, 'target_cpa': tcpa, columns.CLICK_ID: np.arange(n),
          columns.TRUE_CONVERSIONS: rng.poisson(rate),
          columns.TCPA_BUCKET: labels.tcpa_bucket(tcpa),
          columns.BROWSER_OBSERVABILITY: np.where(fraction >= 0.95, 'full', 'low'),
          columns.OBSERVED_FRACTION: fraction,
          synthetic.IN_PANEL: (rng.random(n) < 0.05).astype(np.int64)}
  for c in synthetic.LABELS:
    rows[c] = rng.poisson(rate / 3 * fraction)
  for c in synthetic.EXPOSURES + synthetic.OBSERVED_EXPOSURES:
    rows[c] = np.ones(n)
  rows[columns.MATURITY] = np.ones(n)
  for c in synthetic.TEACHER_RATES:
    rows[c] = rate / 3
  # The band's key and truth (models/fallback.py): a truth 1.3x the candidate's
  # (a lognormal around it), so the candidate wins the loss on the observed
  # counts and fails the band that claims the truth.
  extra = np.random.default_rng(seed + 1)
  rows[synthetic.BROWSER] = extra.integers(0, 5, n)
  truth = rate * np.exp(extra.normal(0.25, 0.1, n))
  for c in synthetic.TRUE_RATES:
    rows[c] = truth / 3
  os.makedirs(split_dir)
  # Gzip, as the ExampleGen writes (schemas/records.py reads it).
  with tf.io.TFRecordWriter(os.path.join(split_dir, 'data.tfrecord.gz'),
                            options='GZIP') as w:
    for i in range(n):
      ex = tf.train.Example()
      for k, v in rows.items():
        value = v[i]
        if isinstance(value, str):
          ex.features.feature[k].bytes_list.value.append(value.encode())
        elif np.issubdtype(type(value), np.integer):
          ex.features.feature[k].int64_list.value.append(int(value))
        else:
          ex.features.feature[k].float_list.value.append(float(value))
      w.write(ex.SerializeToString())
  return rows


def _artifact(cls, uri, **props):
  a = cls()
  a.uri = str(uri)
  a.id = 1
  for k, v in props.items():
    if isinstance(v, int):
      a.set_int_custom_property(k, v)
    else:
      a.set_string_custom_property(k, v)
  return a


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory):
  """A TFMA evaluation (the pipeline's EvalConfig, CIs on) of a calibrated
  candidate against a baseline predicting half the rate, on 3,000 examples."""
  root = tmp_path_factory.mktemp('promotion')
  cfg = config_lib.load_config(None, [])
  models = {}
  # 0.9999, not 1: a multiplication by 1 is folded away, and the two graphs
  # would differ (the executor times models only when their graphs differ).
  for name, scale in (('candidate', 0.9999), ('baseline', 0.5)):
    model = rate_tflite(str(root / f'{name}_src'), scale)
    models[name] = str(root / name)
    os.makedirs(os.path.join(models[name], 'Format-Serving'))
    with open(served_baseline.tflite_path(models[name]), 'wb') as f:
      f.write(model)
  rows = write_examples(str(root / 'examples' / 'Split-eval'))
  eval_config = evaluation.build_eval_config(cfg)
  shared = [tfma.default_eval_shared_model(
      eval_saved_model_path=os.path.join(models[n], 'Format-Serving'),
      model_name=n, eval_config=eval_config) for n in ('candidate', 'baseline')]
  out = str(root / 'evaluation')
  tfma.run_model_analysis(eval_shared_model=shared, eval_config=eval_config,
                          data_location=str(root / 'examples' / 'Split-eval' / '*'),
                          file_format='tfrecords', output_path=out)
  return root, models, rows, out


def run_promotion(evaluated, rule_name, evaluator_blessed=1, fallback=None):
  """Runs the executor; `fallback`: FallbackConfig overrides (None: no band)."""
  root, models, _, out = evaluated
  blessing = _artifact(standard_artifacts.ModelBlessing,
                       root / f'blessing_{rule_name}_{evaluator_blessed}_'
                       f'{len(os.listdir(root))}')
  os.makedirs(blessing.uri, exist_ok=True)
  examples = _artifact(standard_artifacts.Examples, root / 'examples')
  examples.split_names = '["eval"]'
  cfg = config_lib.PromotionConfig(rule=rule_name, latency_samples=1000,
                                   serving_batch=8, bootstrap_replicates=100)
  promotion.Executor().Do({
      promotion.EVALUATION_KEY: [_artifact(standard_artifacts.ModelEvaluation, out)],
      promotion.EVALUATOR_BLESSING_KEY: [_artifact(
          standard_artifacts.ModelBlessing, root, blessed=evaluator_blessed)],
      promotion.MODEL_KEY: [_artifact(standard_artifacts.Model, models['candidate'])],
      promotion.BASELINE_KEY: [_artifact(
          standard_artifacts.Model, models['baseline'],
          **{served_baseline.RECIPE_FINGERPRINT: '',
             'served_version': '20260101T000000Z-0123456789abcdef'})],
      promotion.EXAMPLES_KEY: [examples],
  }, {promotion.BLESSING_KEY: [blessing]},
      {promotion.CONFIG_KEY: cfg.to_json(), promotion.MAX_NLL_KEY: 1.0,
       promotion.EVAL_LABEL_KEY: config_lib.load_config(None, []).eval_label_spec(
       ).to_json(), promotion.TCPA_KEY: synthetic.TARGET_CPA,
       promotion.FALLBACK_KEY: None if fallback is None else config_lib.load_config(
           None, [f'fallback.{k}={v}' for k, v in fallback.items()]
       ).fallback_parameter()})
  with open(os.path.join(blessing.uri, promotion.RESULT_FILE)) as f:
    return blessing, json.load(f)


def prop(artifact, name):
  value = artifact.mlmd_artifact.custom_properties[name]
  return getattr(value, value.WhichOneof('value'))


def test_the_executor_promotes_a_calibrated_candidate_on_loss_bias_and_business(
    evaluated):
  _, _, rows, out = evaluated
  blessing, result = run_promotion(evaluated, 'auto')
  # The baseline has no recipe fingerprint: a change, judged 2 of 3.
  assert result['rule_applied'] == '2_of_3' and not result['same_recipe']
  assert result['areas']['loss_bias']['improved'], result['areas']
  assert result['areas']['business']['improved'], result['areas']
  # One graph (the two differ in a constant): latency is not applicable, not
  # timed, and 2_of_3 needed loss improved and business not worse.
  assert result['same_graph'] and not result['areas']['latency']['applicable']
  assert result['blessed'] and prop(blessing, 'blessed') == 1
  assert os.path.exists(os.path.join(blessing.uri, 'BLESSED'))
  assert result['decisions'] == {'2_of_3': True, 'refresh': True, 'loss_only': True}
  assert result['reason'].startswith(
      'promoted under 2_of_3: area 1 improved, business not worse (latency not '
      'applicable')
  assert 'eval clicks resolve loss differences of' in result['reason']
  for name in ('area_loss_bias', 'area_business', 'area_latency', 'decision_2_of_3',
               'loss_diff', 'loss_diff_upper', 'loss_rel_diff', 'loss_resolvable',
               'eval_clicks', 'key_spend_ratio_candidate', 'spend_ratio_baseline'):
    assert name in blessing.mlmd_artifact.custom_properties, name
  assert 'latency_batch_1_p50_rel_diff' not in blessing.mlmd_artifact.custom_properties
  # The paired figures: every eval click scored by both models, the candidate's
  # loss and spend calibration against the numpy reference.
  pair = result['paired']
  label, scale, keep = eval_labels.label_and_scale(rows, 'truth', synthetic.WINDOW_NAMES)
  assert pair['clicks'] == int(keep.sum()) == len(rows[columns.CLICK_ID])
  assert pair['loss']['candidate'] == pytest.approx(
      nll.poisson_nll(label, 0.9999 * true_rate(rows['price'])), rel=1e-5)
  want = spend_metric.reference(rows['target_cpa'], 0.9999 * true_rate(rows['price']), label,
                                scale, keep)
  assert pair['spend']['candidate_ratio']['value'] == pytest.approx(
      want['spend_ratio'], rel=1e-5)
  # TFMA's figures, with intervals, equal the numpy reference.
  figs = figures.load(out)
  pconvs = 0.9999 * true_rate(rows['price'])
  high = rows[columns.TCPA_BUCKET] == columns.HIGH_TCPA_BUCKET
  label, scale, keep = eval_labels.label_and_scale(rows, 'truth', synthetic.WINDOW_NAMES)
  for name, mask in (('overall', np.ones_like(high)), (KEY, high)):
    want = spend_metric.reference(rows['target_cpa'], pconvs, label, scale,
                                  keep & mask)
    for metric, value in want.items():
      got = figs[name][metric]['candidate']
      assert got.value == pytest.approx(value, rel=1e-4), (name, metric)
  key = figs[KEY]['spend_log_error']['diff']
  assert key.lower < key.value < key.upper < 0
  print(json.dumps(result['areas'], indent=1))


def test_loss_only_follows_the_evaluator_blessing_whatever_the_areas(evaluated):
  blessing, result = run_promotion(evaluated, 'loss_only', evaluator_blessed=0)
  assert result['areas']['loss_bias']['improved']
  assert not result['blessed'] and prop(blessing, 'blessed') == 0
  assert os.path.exists(os.path.join(blessing.uri, 'NOT_BLESSED'))
  assert result['decisions']['loss_only'] is False
  assert result['decisions']['2_of_3'] is True


def test_nan_figures_stay_out_of_ml_metadata_and_the_summary_shows_the_areas():
  assert promotion.finite({'a': 1.0, 'b': float('nan'), 'c': float('inf')}) == {
      'a': 1.0}
  a = areas(loss=BETTER, p50=BETTER)
  props = {'blessed': 1, 'rule': 'auto', 'rule_applied': '2_of_3', 'same_recipe': 0,
           'auto_rule': '2_of_3'}
  for name, area in a.items():
    props[f'area_{name}'] = int(area.improved)
    props[f'area_{name}_reason'] = area.reason
  for name, decided in rule.decide_all(a, True, True).items():
    props[f'decision_{name}'] = int(decided)
  props['reason'] = (rule.explain('2_of_3', True, a) +
                     '; 5,714 eval clicks resolve loss differences of 2.1%')
  text = '\n'.join(report.promotion_text(props))
  # One line of why first: the verdict, the areas, what the night resolves.
  assert text.startswith('promotion: promoted under 2_of_3: 2 of 3 areas '
                         'improved (loss_bias, latency; 2 needed); 5,714 eval clicks '
                         'resolve loss differences of 2.1%\n'
                         '  rule auto -> 2_of_3 (recipe or architecture changed')
  assert 'area 1 loss and bias: improved: loss diff -0.01000' in text
  assert 'area 2 business: not improved' in text
  assert 'area 3 latency: improved: batch_1 p50 -1.0%' in text
  assert 'rules: 2_of_3 promotes, refresh promotes, loss_only promotes' in text


def test_a_candidate_over_the_failed_fraction_cap_is_not_promoted_whatever_its_loss(
    evaluated):
  # Within a cap of 1: promoted as without a band, and the band is recorded.
  blessing, result = run_promotion(evaluated, 'auto',
                                   fallback={'max_failed_fraction': 1.0})
  fb = result['fallback']
  assert result['blessed'] and fb['within_cap'], result['reason']
  assert fb['band']['rule'] == 'reference_quantile' and fb['band']['level'] == 0.9
  assert fb['fallback_version'] == '20260101T000000Z-0123456789abcdef'
  # The band claims the truth (1.3x the candidate) and covers it at its level.
  assert abs(fb['coverage']['overall']['mean'] - 0.9) < 0.05, fb['coverage']
  assert fb['failed_fraction'] > 0.9
  assert set(fb['failed']) >= {'overall', columns.BROWSER_OBSERVABILITY,
                               columns.TCPA_BUCKET}
  assert prop(blessing, 'fallback_within_cap') == 1
  assert prop(blessing, 'fallback_failed_fraction') == pytest.approx(
      fb['failed_fraction'])
  assert 'fallback_failed_browser_observability_low' in (
      blessing.mlmd_artifact.custom_properties)
  # Over the cap: not promoted by any rule, though areas 1 and 2 improved.
  blessing, result = run_promotion(evaluated, 'auto',
                                   fallback={'max_failed_fraction': 0.5})
  assert result['areas']['loss_bias']['improved']
  assert result['areas']['business']['improved']
  assert not result['blessed'] and prop(blessing, 'blessed') == 0
  assert not any(result['decisions'].values())
  assert "the fallback band's failed fraction is over its cap" in result['reason']
  assert 'above 0.5' in result['reason']
  assert os.path.exists(os.path.join(blessing.uri, 'NOT_BLESSED'))
  assert prop(blessing, 'fallback_within_cap') == 0
  # rule none: no band, no cap.
  _, result = run_promotion(evaluated, 'auto', fallback={'rule': 'none'})
  assert result['blessed'] and 'fallback' not in result
