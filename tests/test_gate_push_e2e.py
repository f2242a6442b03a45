"""End-to-end: the Evaluator gate and the push over three nights (conftest.e2e)."""

import datetime
import json
import os

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.promotion import figures as promotion_figures
from components.pusher import push
from components.quantizer import convert
from components.served_baseline import executor as served_baseline
from models import nll
from models import spend_metric
from observation import eval_labels
from pipeline import local
from pipeline import report
from schemas import columns
from schemas import records
from tests.helpers import true_relative_change
from world import synthetic

pytestmark = pytest.mark.e2e


def prop(artifact, name):
  return local.custom_property(artifact, name)


def served_model(e2e, night):
  """The night's baseline (ServedBaseline's output) and its TFLite bytes."""
  (baseline,) = e2e.outputs('ServedBaseline', night)[served_baseline.BASELINE_KEY]
  with open(os.path.join(baseline.uri, 'Format-Serving', 'tflite'), 'rb') as f:
    return baseline, f.read()


def pushed_model(e2e, night):
  """The model bytes the night pushed (read back from the serving directory)."""
  version = prop(e2e.artifact('Pusher', 'pushed_model', night), 'pushed_version')
  with open(os.path.join(e2e.paths.serving_dir, version, push.MODEL_FILE), 'rb') as f:
    return version, f.read()


def test_bootstrap_blesses_and_pushes_the_first_baseline(e2e):
  blessing = e2e.artifact('Evaluator', 'blessing', 'bootstrap')
  assert prop(blessing, 'blessed') == 1
  assert prop(blessing, 'baseline_model') is None  # nothing to compare with yet
  pushed = e2e.artifact('Pusher', 'pushed_model', 'bootstrap')
  t = e2e.cfg.world.start() + datetime.timedelta(days=e2e.cfg.world.days - 11)
  assert prop(pushed, 'pushed') == 1
  assert prop(pushed, 'pushed_version').startswith(push.t_label(t) + '-')
  result = e2e.artifact('ServedBaseline', served_baseline.RESULT_KEY, 'bootstrap')
  assert prop(result, 'bootstrap') == 1 and prop(result, 'baseline_version') == ''
  assert not e2e.outputs('ServedBaseline', 'bootstrap').get(
      served_baseline.BASELINE_KEY)


def test_distilled_candidate_is_gated_against_the_served_bootstrap_and_pushed(e2e):
  blessing = e2e.artifact('Evaluator', 'blessing', 'kd')
  baseline, model = served_model(e2e, 'kd')
  version, served = pushed_model(e2e, 'bootstrap')
  assert prop(blessing, 'baseline_model') == baseline.uri
  assert model == served and prop(baseline, 'served_version') == version
  assert prop(blessing, 'blessed') == 1
  pushed = e2e.artifact('Pusher', 'pushed_model', 'kd')
  assert prop(pushed, 'pushed') == 1 and prop(pushed, 'backfill') == 0
  versions = push.complete_versions(e2e.paths.serving_dir)
  assert versions[-1] == prop(pushed, 'pushed_version')

  # The pushed model loads in the TFLite interpreter and predicts real examples.
  with open(os.path.join(push.latest(e2e.paths.serving_dir), push.MODEL_FILE),
            'rb') as f:
    model = f.read()
  examples = e2e.artifact('BulkInferrer', 'output_examples', 'kd')
  rows = records.read_examples(os.path.join(examples.uri, 'Split-eval'))
  pconvs = convert.predict(model, rows)
  assert len(pconvs) == len(rows[columns.CLICK_ID]) > 0
  assert np.isfinite(pconvs).all() and (pconvs > 0).all()
  truth = rows[columns.TRUE_CONVERSIONS]
  assert 0.5 < pconvs.mean() / max(truth.mean(), 1e-9) < 2.0


def test_a_worse_candidate_is_not_blessed_and_nothing_is_pushed(e2e):
  states = e2e.states['worse']
  assert states['Evaluator'] == 'COMPLETE' and states['Pusher'] == 'COMPLETE'
  blessing = e2e.artifact('Evaluator', 'blessing', 'worse')
  baseline, model = served_model(e2e, 'worse')
  assert prop(blessing, 'baseline_model') == baseline.uri
  assert model == pushed_model(e2e, 'kd')[1]  # the served distilled model
  assert prop(blessing, 'blessed') == 0
  pushed = e2e.artifact('Pusher', 'pushed_model', 'worse')
  assert prop(pushed, 'pushed') == 0 and prop(pushed, 'reason') == 'not blessed'
  # The worse night has a T of its own, so not pushing is the gate's doing; the
  # serving directory is exactly as the distilled night left it.
  assert e2e.serving['worse'] == e2e.serving['kd']


def test_after_an_unblessed_night_the_baseline_is_a_served_student_not_a_teacher(e2e):
  # The run after the unblessed night: its baseline is a TFLite model served
  # from the serving directory (the teacher is a SavedModel, never pushed).
  blessing = e2e.artifact('Evaluator', 'blessing', 'backfill')
  baseline, model = served_model(e2e, 'backfill')
  assert prop(blessing, 'baseline_model') == baseline.uri
  assert model in {pushed_model(e2e, n)[1] for n in ('bootstrap', 'kd')}
  teacher = e2e.artifact('teacher', 'model', 'worse')
  assert not os.path.exists(os.path.join(baseline.uri, 'Format-Serving',
                                         'saved_model.pb'))
  assert baseline.uri != teacher.uri
  # Only the Evaluator and the Promotion emit ModelBlessings; the Pusher reads
  # the Promotion's (the final one).
  store = metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(
          e2e.paths.metadata))
  blessings = store.get_artifacts_by_type(standard_artifacts.ModelBlessing.TYPE_NAME)
  assert blessings and all('/Evaluator/' in b.uri or '/Promotion/' in b.uri
                           for b in blessings)


def test_a_backfill_is_gated_against_the_version_served_then_and_serving_keeps_newest(e2e):
  result = e2e.artifact('ServedBaseline', served_baseline.RESULT_KEY, 'backfill')
  bootstrap_version, bootstrap_model = pushed_model(e2e, 'bootstrap')
  kd_version, _ = pushed_model(e2e, 'kd')
  # As of its eval start (end - 11d) serving served the bootstrap, not the newer
  # distilled model, which trained on the backfill's eval days.
  assert prop(result, 'backfill') == 1
  assert prop(result, 'baseline_version') == bootstrap_version
  assert prop(result, 'newest_version') == kd_version
  assert served_model(e2e, 'backfill')[1] == bootstrap_model
  pushed = e2e.artifact('Pusher', 'pushed_model', 'backfill')
  if prop(pushed, 'pushed'):
    # Pushed beside the others, never what serving reads as newest.
    assert prop(pushed, 'backfill') == 1
    assert any(k.startswith(prop(pushed, 'pushed_version') + os.sep)
               for k in e2e.serving['backfill'])
  assert push.newest(e2e.paths.serving_dir) == kd_version
  assert 'backfill: serving keeps the newer ' + kd_version in e2e.summaries['backfill']


def test_tfma_poisson_log_loss_equals_the_reference_nll(e2e):
  evaluation = e2e.artifact('Evaluator', 'evaluation', 'kd')
  gate = report.gate_metrics(evaluation.uri)
  candidate = e2e.artifact('Quantizer', 'quantized_model', 'kd')
  with open(os.path.join(candidate.uri, 'Format-Serving', 'tflite'), 'rb') as f:
    model = f.read()
  examples = e2e.artifact('BulkInferrer', 'output_examples', 'kd')
  rows = records.read_examples(os.path.join(examples.uri, 'Split-eval'))
  pconvs = convert.predict(model, rows)
  want = nll.poisson_nll(rows[columns.TRUE_CONVERSIONS], pconvs)
  assert gate['overall']['candidate'] == pytest.approx(want, rel=1e-6)
  high = rows[columns.TCPA_BUCKET] == 'tcpa_gt_250'
  if high.any():
    assert gate['tcpa_gt_250']['candidate'] == pytest.approx(
        nll.poisson_nll(rows[columns.TRUE_CONVERSIONS][high], pconvs[high]), rel=1e-6)
  assert gate['overall']['baseline'] > gate['overall']['candidate']


def test_every_label_mode_and_slice_is_reported(e2e):
  evaluation = e2e.artifact('Evaluator', 'evaluation', 'kd')
  names, slices = set(), set()
  for per_slice in tfma.load_metrics(evaluation.uri):
    slices.add(tuple(k.column for k in per_slice.slice_key.single_slice_keys))
    for kv in per_slice.metric_keys_and_values:
      names.add((kv.key.name, kv.key.model_name))
  for name in ('poisson_log_loss', 'poisson_log_loss_calibration',
               'poisson_log_loss_examples', 'poisson_log_loss_observed_observable',
               'poisson_log_loss_observed_modeled', 'poisson_log_loss_panel',
               'example_count'):
    assert (name, 'candidate') in names and (name, 'baseline') in names, name
  assert {(), ('tcpa_bucket',), ('browser_observability',)} <= slices


NIGHTS_PROMOTED = ('bootstrap', 'kd', 'worse', 'backfill')


def test_the_push_follows_the_promotion_decision_alone(e2e):
  for night in NIGHTS_PROMOTED:
    promotion = e2e.artifact('Promotion', 'blessing', night)
    pushed = e2e.artifact('Pusher', 'pushed_model', night)
    blessed = prop(promotion, 'blessed')
    assert blessed in (0, 1), night
    if not blessed:
      assert prop(pushed, 'pushed') == 0 and prop(pushed, 'reason') == 'not blessed'
    else:
      assert prop(pushed, 'pushed') == 1, night
    # Every rule's decision is recorded; the applied one is the blessing.
    applied = prop(promotion, 'rule_applied')
    if applied != 'bootstrap':
      assert prop(promotion, f'decision_{applied}') == blessed, night
    # loss_only is today's gate: the Evaluator's blessing.
    assert prop(promotion, 'decision_loss_only') == prop(
        e2e.artifact('Evaluator', 'blessing', night), 'blessed'), night
  assert prop(e2e.artifact('Promotion', 'blessing', 'bootstrap'),
              'rule_applied') == 'bootstrap'
  # The fixture runs the default rule, auto: the production bootstrap's recipe
  # differs from the distilled candidate's, the distilled backfill's from the
  # bootstrap it is gated against, so each is judged 2_of_3.
  for night in ('kd', 'worse', 'backfill'):
    promotion = e2e.artifact('Promotion', 'blessing', night)
    assert prop(promotion, 'rule') == 'auto', night
    assert prop(promotion, 'same_recipe') == 0, night
    assert prop(promotion, 'rule_applied') == '2_of_3', night
  baseline, _ = served_model(e2e, 'kd')
  assert prop(baseline, 'recipe_fingerprint')  # the Pusher recorded it


def test_the_default_rule_promotes_the_truly_better_and_refuses_the_truly_worse(e2e):
  """Against the truth (fresh clicks of the world, never logged): each gated
  night's candidate and baseline by their expected Poisson NLL. A candidate
  better by 1.5x what the night's eval set resolves (at 80% power) is
  promoted (power about 0.99 there); a worse one is not."""
  changes = {}
  for night in ('kd', 'worse', 'backfill'):
    promotion = e2e.artifact('Promotion', 'blessing', night)
    cand_uri = prop(promotion, 'current_model')
    base_uri = prop(promotion, 'baseline_model')
    change = true_relative_change(e2e.cfg, cand_uri, base_uri)
    changes[night] = change
    promoted = prop(promotion, 'blessed')
    resolvable = prop(promotion, 'loss_resolvable')
    assert 0 < resolvable < 0.2, (night, resolvable)
    if change > 0:
      assert not promoted, (night, change, prop(promotion, 'reason'))
    if change < -1.5 * resolvable:
      # The loss comparison sees it; the rule promotes unless a guard (a tCPA
      # bucket's spend, the bias) broke, which the reason names.
      assert prop(promotion, 'loss_diff_upper') < 0, (night, change)
      assert promoted or 'guards broken' in prop(promotion, 'reason'), (
          night, change, resolvable, prop(promotion, 'reason'))
  # The fixture has both kinds: the distilled night beats the weak bootstrap
  # beyond the noise, the production night against it is worse.
  assert changes['kd'] < -1.5 * prop(e2e.artifact('Promotion', 'blessing', 'kd'),
                                     'loss_resolvable'), changes
  assert changes['worse'] > 0, changes
  assert prop(e2e.artifact('Promotion', 'blessing', 'kd'), 'blessed') == 1


def test_the_promotion_records_three_areas_with_their_figures(e2e):
  promotion = e2e.artifact('Promotion', 'blessing', 'kd')
  for area in ('loss_bias', 'business'):
    assert prop(promotion, f'area_{area}') in (0, 1), area
    assert prop(promotion, f'area_{area}_reason'), area
  # Two builds of one student architecture and quantization: latency cannot
  # tell them apart, so it is not judged and the rule counts two areas.
  assert prop(promotion, 'area_latency') == -1
  assert prop(promotion, 'area_latency_reason').startswith('not applicable')
  with open(os.path.join(promotion.uri, 'promotion.json')) as f:
    result = json.load(f)
  assert result['same_graph'] is True and result['latency'] is None
  # The paired figures: every scored eval click, intervals around the values.
  paired = result['paired']
  rows = records.read_examples(os.path.join(
      e2e.artifact('BulkInferrer', 'output_examples').uri, 'Split-eval', '*'))
  assert 0.9 * len(rows[columns.CLICK_ID]) <= paired['clicks'] <= len(rows[columns.CLICK_ID])
  for figure in (paired['loss']['diff'], paired['bias']['diff'], paired['spend']['diff']):
    assert figure['lower'] < figure['value'] < figure['upper']
  assert prop(promotion, 'eval_clicks') == paired['clicks']
  # The Evaluator's TFMA figures are kept for the report.
  loss = result['figures']['overall']['poisson_log_loss']['diff']
  assert loss['lower'] < loss['value'] < loss['upper']
  summary = e2e.summaries['kd']
  for line in ('promotion: promoted under 2_of_3: ', 'eval clicks resolve loss differences of ',
               'area 1 loss and bias: ', 'area 2 business: ',
               'area 3 latency: not applicable: ', 'rules: 2_of_3 '):
    assert line in summary, (line, summary)
  print(summary)


def test_spend_metrics_equal_a_numpy_reference_per_tcpa_slice(e2e):
  evaluation = e2e.artifact('Evaluator', 'evaluation', 'kd')
  figures = promotion_figures.load(evaluation.uri)
  examples = e2e.artifact('BulkInferrer', 'output_examples', 'kd')
  rows = records.read_examples(os.path.join(examples.uri, 'Split-eval'))
  label, scale, keep = e2e.cfg.eval_label_spec().label_and_scale(rows)
  tcpa = rows[synthetic.TARGET_CPA].astype(np.float64)
  candidate = e2e.artifact('Quantizer', 'quantized_model', 'kd')
  baseline, _ = served_model(e2e, 'kd')
  for model_key, artifact in (('candidate', candidate), ('baseline', baseline)):
    with open(os.path.join(artifact.uri, 'Format-Serving', 'tflite'), 'rb') as f:
      pconvs = convert.predict(f.read(), rows)
    slices = {'overall': np.ones(len(tcpa), bool)}
    for bucket in np.unique(rows[columns.TCPA_BUCKET]):
      slices[f'{columns.TCPA_BUCKET}={bucket}'] = rows[columns.TCPA_BUCKET] == bucket
    for name, mask in slices.items():
      want = spend_metric.reference(tcpa, pconvs, label, scale, keep & mask)
      for metric, value in want.items():
        got = figures[name][metric][model_key].value
        assert got == pytest.approx(value, rel=1e-5), (name, metric)
  assert 'diff' in figures[f'{columns.TCPA_BUCKET}=tcpa_gt_250']['spend_log_error']
