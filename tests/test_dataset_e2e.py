"""The whole DAG on a dataset of another shape (the `app_e2e` fixture: app
installs, string ids, no browser, tCPA, panel or truth, three hour-scale
windows), a bootstrap and a distilled night, the second after a one-line edit of
the spec added a serving feature."""

import json
import os

import pytest

from components.pusher import push
from components.quantizer import convert
from pipeline import local
from schemas import columns
from tests import app_installs

pytestmark = pytest.mark.e2e

NODES = ('ConversionLogExampleGen', 'ServedBaseline', 'StatisticsGen',
         'ImportSchemaGen', 'ExampleValidator', 'DataGate', 'Transform', 'teacher',
         'TeacherGate', 'BulkInferrer', 'SweepLookup', 'student', 'Quantizer',
         'Evaluator', 'Promotion', 'Pusher')


def tflite_inputs(model: bytes):
  names = [d['name'] for d in convert.interpreter(model).get_input_details()]
  return {n[len(convert.INPUT_PREFIX):].split(':')[0] for n in names}


def test_every_component_runs_on_both_nights(app_e2e):
  for night in ('bootstrap', 'kd'):
    states = app_e2e.states[night]
    assert {n: states.get(n) for n in NODES} == {n: 'COMPLETE' for n in NODES}, night


def test_the_bootstrap_pushes_a_model_of_the_specs_serving_features(app_e2e):
  version = push.newest(app_e2e.cfg.paths.serving_dir)
  assert version is not None
  files = app_e2e.serving['bootstrap']
  (model,) = [b for p, b in files.items() if p.endswith('model.tflite')
              and 'fallback' not in p]
  assert tflite_inputs(model) == set(app_installs.SERVING)


def test_one_line_of_the_spec_adds_a_serving_feature(app_e2e):
  """The kd night's spec gained device_score: its student reads it, its TFLite
  model takes it, and the teacher-only feature still stays offline."""
  cfg = app_e2e.configs['kd']
  assert cfg.dataset.serving_names() == app_installs.SERVING + ('device_score',)
  quantized = app_e2e.artifact('Quantizer', 'quantized_model')
  with open(os.path.join(quantized.uri, 'Format-Serving', 'tflite'), 'rb') as f:
    assert tflite_inputs(f.read()) == set(cfg.dataset.serving_names())
  examples = app_e2e.artifact('ConversionLogExampleGen', 'examples')
  assert 'session_depth' not in tflite_inputs(open(os.path.join(
      quantized.uri, 'Format-Serving', 'tflite'), 'rb').read())
  assert local.custom_property(examples, 'train_examples') > 1000


def cfg_off(nights):
  return nights.configs['kd'].dataset.summary()


def test_what_the_dataset_lacks_is_off_and_said_once(app_e2e):
  summary = app_e2e.summaries['kd']
  assert len(cfg_off(app_e2e)) == 4
  assert summary.count('dataset: app_installs (tfrecord; delay windows 0_1h, 1_6h, '
                       '6_24h)') == 1
  for off in cfg_off(app_e2e):
    assert summary.count(off) == 1, off
  # The TeacherGate judged the teacher on reported conversions.
  gate = app_e2e.artifact('TeacherGate', 'result')
  assert local.custom_property(gate, 'mode') == 'observed'
  # The Evaluator sliced nothing the dataset does not have; the business area
  # judged overall spend calibration.
  promotion = app_e2e.artifact('Promotion', 'blessing')
  with open(os.path.join(promotion.uri, 'promotion.json')) as f:
    result = json.load(f)
  assert not any(columns.TCPA_BUCKET in s or columns.BROWSER_OBSERVABILITY in s
                 for s in result['figures'])
  assert result['areas']['business']['improved'] is not None
  assert 'overall' in result['areas']['business']['reason']


def test_the_delay_model_is_fitted_on_the_logs(app_e2e):
  delay = app_e2e.artifact('ConversionLogExampleGen', 'delay_model')
  assert local.custom_property(delay, 'source') == 'fitted'
  assert local.custom_property(delay, 'conversions') > 100
  assert 'delay model: fitted on' in app_e2e.summaries['kd']
