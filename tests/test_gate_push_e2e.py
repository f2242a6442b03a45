"""End-to-end: the Evaluator gate and the push over three nights (conftest.e2e)."""

import os

import numpy as np
import pytest
import tensorflow_model_analysis as tfma

from components.pusher import push
from components.quantizer import convert
from models import nll
from pipeline import local
from pipeline import report
from schemas import columns
from schemas import records

pytestmark = pytest.mark.e2e


def prop(artifact, name):
  return local.custom_property(artifact, name) if name in artifact.custom_properties \
      else None


def test_bootstrap_blesses_and_pushes_the_first_baseline(e2e):
  blessing = e2e.artifact('Evaluator', 'blessing', 'bootstrap')
  assert prop(blessing, 'blessed') == 1
  assert prop(blessing, 'baseline_model') is None  # nothing to compare with yet
  pushed = e2e.artifact('Pusher', 'pushed_model', 'bootstrap')
  assert prop(pushed, 'pushed') == 1
  assert prop(pushed, 'pushed_version').startswith('20260116T000000Z-')
  summary = e2e.artifact('BaselineCheck', 'result', 'bootstrap')
  assert prop(summary, 'bootstrap') == 1


def test_distilled_candidate_is_gated_against_the_bootstrap_and_pushed(e2e):
  blessing = e2e.artifact('Evaluator', 'blessing', 'kd')
  bootstrap_model = e2e.artifact('Quantizer', 'quantized_model', 'bootstrap')
  assert prop(blessing, 'baseline_model') == bootstrap_model.uri
  assert prop(blessing, 'blessed') == 1
  pushed = e2e.artifact('Pusher', 'pushed_model', 'kd')
  assert prop(pushed, 'pushed') == 1
  versions = push.complete_versions(e2e.paths.serving_dir)
  assert len(versions) == 2 and versions[-1] == prop(pushed, 'pushed_version')

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
  kd_model = e2e.artifact('Quantizer', 'quantized_model', 'kd')
  assert prop(blessing, 'blessed') == 0
  assert prop(blessing, 'baseline_model') == kd_model.uri
  pushed = e2e.artifact('Pusher', 'pushed_model', 'worse')
  assert prop(pushed, 'pushed') == 0 and prop(pushed, 'reason') == 'not blessed'
  # The worse night has a T of its own, so not pushing is the gate's doing; the
  # serving directory is exactly as the distilled night left it.
  assert e2e.serving['worse'] == e2e.serving['kd']
  assert len(push.complete_versions(e2e.paths.serving_dir)) == 2


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
               'poisson_log_loss_observed_modeled', 'example_count'):
    assert (name, 'candidate') in names and (name, 'baseline') in names, name
  assert {(), ('tcpa_bucket',), ('browser_observability',)} <= slices
